"""The baseline: a raw Starlette WebSocket broadcast under the same uvicorn options as our
service (websockets-sansio, no per-message deflate). Clients connect to /ws; a POST /publish
body is sent as is to every socket with a plain loop of `await ws.send_text(...)`.

For the HTTP bench (bench.httpbench), `POST /json` is the least a JSON API endpoint does: it
reads and decodes the JSON request body and answers a small JSON body shaped like a GraphQL
answer (`{"data": {"me": {...}}}`, ~90 bytes) with Starlette's `JSONResponse`.

    taskset -c 0 python -m bench.raw_server --port 8100
"""

from __future__ import annotations

import argparse
import contextlib
import resource

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

HEARTBEAT_S = 30  # the service's default ws_heartbeat_interval
ANSWER = {"data": {"me": {"id": "bench-doctor-0123456789", "displayName": "Dr Reader",
                          "role": "DOCTOR"}}}


def create_app() -> Starlette:
    sockets: set[WebSocket] = set()

    async def subscribe(ws: WebSocket) -> None:
        await ws.accept()
        sockets.add(ws)
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            sockets.discard(ws)

    async def publish(request: Request) -> JSONResponse:
        text = (await request.body()).decode()
        sent = 0
        for ws in list(sockets):
            with contextlib.suppress(Exception):  # a closing peer; its handler cleans up
                await ws.send_text(text)
                sent += 1
        return JSONResponse({"sent": sent})

    async def answer(request: Request) -> JSONResponse:
        body = await request.json()
        if not isinstance(body, dict) or "query" not in body:
            return JSONResponse({"errors": [{"message": "no query"}]}, status_code=400)
        return JSONResponse(ANSWER)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "sockets": len(sockets)})

    return Starlette(routes=[WebSocketRoute("/ws", subscribe),
                             Route("/publish", publish, methods=["POST"]),
                             Route("/json", answer, methods=["POST"]),
                             Route("/healthz", healthz)])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.raw_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvicorn.run(create_app(), host=args.host, port=args.port, ws="websockets-sansio",
                ws_per_message_deflate=False, ws_ping_interval=HEARTBEAT_S,
                ws_ping_timeout=HEARTBEAT_S, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()

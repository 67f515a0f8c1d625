"""The baseline: a raw Starlette WebSocket broadcast under the same uvicorn options as our
service (websockets-sansio, no per-message deflate). Clients connect to /ws; a POST /publish
body is sent as is to every socket with a plain loop of `await ws.send_text(...)`.

For the reconnect storm (bench.storm), `/graphql` is the least a graphql-transport-ws server
does: it accepts the subprotocol, answers `connection_init` with `connection_ack` and
`subscribe` with one canned `next` frame shaped like ours (the storm's message, the same
size), and keeps the socket open.

For the HTTP bench (bench.httpbench), `POST /json` is the least a JSON API endpoint does: it
reads and decodes the JSON request body and answers a small JSON body shaped like a GraphQL
answer (`{"data": {"me": {...}}}`, ~90 bytes) with Starlette's `JSONResponse`.

    taskset -c 0 python -m bench.raw_server --port 8100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.loadgen import content, raw_frame
from bench.wsclient import T0

HEARTBEAT_S = 30  # the service's default ws_heartbeat_interval
ANSWER = {"data": {"me": {"id": "bench-doctor-0123456789", "displayName": "Dr Reader",
                          "role": "DOCTOR"}}}
ACK = '{"type":"connection_ack"}'
STORM_SEQ = 1003  # about the seq of the storm's message in ours' room (1,000 joins before it)
STORM_SENT_NS = T0 + 60 * 10**9  # its send time as ours' carries it: ~1 min after start-up


def next_tail() -> str:
    """The storm's `next` frame after its id: the payload of a frame shaped like ours."""
    frame = raw_frame(content("s", 0, STORM_SENT_NS), STORM_SEQ).decode()
    return frame[frame.index(',"type":"next"'):]


STORM_TAIL = next_tail()  # one canned frame for every storm socket


async def storm_socket(ws: WebSocket) -> None:
    """The reconnect storm's handshake: ack the init, answer a subscribe with the frame."""
    await ws.accept(subprotocol="graphql-transport-ws")
    try:
        while True:
            message = json.loads(await ws.receive_text())
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "connection_init":
                await ws.send_text(ACK)
            elif kind == "subscribe":
                await ws.send_text('{"id":' + json.dumps(message.get("id")) + STORM_TAIL)
    except WebSocketDisconnect:
        pass


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
                             WebSocketRoute("/graphql", storm_socket),
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

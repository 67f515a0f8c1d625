"""The reconnect storm's load generator (run it pinned to its own core, `taskset -c 1 python -m
bench.stormload ...`): N clients reconnect at once and each goes through the whole handshake,
then the one JSON line of results is printed.

Per client: TCP connect and WebSocket upgrade (`graphql-transport-ws` at /graphql, for both
servers), `connection_init` with a token → `connection_ack`, `subscribe` to `roomEvents` with
`after:` the cursor from before the storm's message → the first `next` frame, which must be
that message (`bench|s|...`) replayed from storage. Every client is started at t0; only the
connect stage (TCP connect + upgrade) is bounded, by `--connect-concurrency` sockets at once:
the listen backlogs (uvicorn 2,048, tcp_max_syn_backlog) would otherwise drop SYNs and the
run would measure TCP's 1 s retransmission timer, not the server. Init and subscribe are not
bounded: every upgraded socket sends them at once.

A client does what ours asks of it: closed with 1013 (the database could not record the user:
try again later) or 1012 it reconnects; answered SERVICE_UNAVAILABLE ("subscribe again with
your last cursor shortly") it subscribes again on the same socket; both after a jittered
0.5-1.5 s, counted as retries. Anything else before the first event fails the client.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import os
import random
import time
from pathlib import Path
from typing import Any

import orjson

from bench.loadgen import children_cpu_s, cpu_s, run_and_print
from bench.wsclient import Stats, WSClient, pct

TAG = b"bench|s|"  # the storm's message (bench.storm posts it, bench.raw_server cans it)
SUBSCRIPTION = (  # the fan-out bench's 5-field selection, resuming after a cursor
    "subscription($room: ID!, $after: String) { roomEvents(roomId: $room, after: $after) {"
    " ... on MessagePosted { message { id content seq createdAt author { displayName } } } } }")
RAW_TOKEN = "raw." + "x" * 200  # raw checks nothing; a token-sized init like ours
RETRY_S = (0.5, 1.5)  # a client's jittered pause before reconnecting or resubscribing
COME_BACK = (1012, 1013)  # close codes that ask the client to reconnect (restart, try later)


class Retry(Exception):
    """Ours asked to come back (closed 1013/1012, or SERVICE_UNAVAILABLE): a client would."""


class StormClient(WSClient):
    """One reconnecting client's socket: its ack, and the answer to its current subscribe."""

    def __init__(self, stats: Stats, request: bytes) -> None:
        super().__init__(stats, request)
        self.close_code = 1006  # no close frame: the connection was lost
        self.answer: asyncio.Future[int] = self._future()

    def _future(self) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    def subscribe(self, text: str) -> asyncio.Future[int]:
        self.answer = self._future()
        self.send_text(text)
        return self.answer

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.answer.done():
            self.answer.set_exception(ConnectionError(f"closed {self.close_code}"))

    def _frame(self, b0: int, payload: bytes, now: int) -> None:
        if b0 & 0x0F == 8:  # close: why matters (1013: come back), it is no error as such
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if self.transport is not None:
                self.transport.close()
            return
        super()._frame(b0, payload, now)

    def _text(self, payload: bytes, now: int) -> None:
        self.stats.frames += 1
        self.stats.last_frame = now
        if b'"connection_ack"' in payload:
            if not self.acked.done():
                self.acked.set_result(None)
        elif self.answer.done() or b'"type":"complete"' in payload or \
                b'"type":"ping"' in payload or b'"type":"pong"' in payload:
            return
        elif TAG in payload:
            self.stats.size = len(payload)
            self.answer.set_result(now)
        elif b'"SERVICE_UNAVAILABLE"' in payload:
            self.answer.set_exception(Retry("SERVICE_UNAVAILABLE"))
        else:  # the first event must be the replayed message: anything else is a failure
            self.answer.set_exception(RuntimeError(
                f"first frame not the storm's message: {payload[:300].decode(errors='replace')}"))


class Storm:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = Stats()
        setup: dict[str, Any] = orjson.loads(Path(args.setup).read_bytes()) \
            if args.setup else {}
        self.room: str = setup.get("room", "")
        self.after: str | None = setup.get("after")
        self.tokens: list[str] = setup.get("tokens") or [RAW_TOKEN]
        self.clients: list[StormClient] = []
        self.retries: collections.Counter[str] = collections.Counter()

    def _request(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (f"GET /graphql HTTP/1.1\r\nHost: {self.args.host}:{self.args.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n").encode()

    async def client(self, i: int, gate: asyncio.Semaphore) -> tuple[int, int, int]:
        """One client until it has its first event, reconnecting or resubscribing (after
        RETRY_S, jittered) when ours asks it to; its last attempt's stage times."""
        while True:
            try:
                return await self._attempt(i, gate)
            except Retry as retry:
                self.retries[str(retry)] += 1
            await asyncio.sleep(random.uniform(*RETRY_S))

    async def _attempt(self, i: int, gate: asyncio.Semaphore) -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        async with gate:
            _, client = await loop.create_connection(
                lambda: StormClient(self.stats, self._request()), self.args.host,
                self.args.port)
            self.clients.append(client)
            await client.upgraded
        upgraded = time.monotonic_ns()
        try:
            acked, ready = await self._handshake(client, i)
        except ConnectionError:
            if client.close_code in COME_BACK:
                raise Retry(f"closed {client.close_code}") from None
            raise
        return upgraded, acked, ready

    async def _handshake(self, client: StormClient, i: int) -> tuple[int, int]:
        """connection_init → ack, then subscribe (again, on SERVICE_UNAVAILABLE) until the
        first event: when it was acked, and when the first event came."""
        token = self.tokens[i % len(self.tokens)]  # subscription i is user i mod users
        client.send_text(orjson.dumps({"type": "connection_init", "payload": {
            "authorization": f"Bearer {token}"}}).decode())
        await client.acked
        acked, attempt = time.monotonic_ns(), 0
        while True:
            attempt += 1  # a fresh id: the refused one may not be free yet
            try:
                return acked, await client.subscribe(orjson.dumps({
                    "id": str(attempt), "type": "subscribe", "payload": {
                        "query": SUBSCRIPTION,
                        "variables": {"room": self.room, "after": self.after}}}).decode())
            except Retry as retry:
                self.retries[str(retry)] += 1
            await asyncio.sleep(random.uniform(*RETRY_S))

    async def run(self) -> dict[str, Any]:
        args, st = self.args, self.stats
        gate = asyncio.Semaphore(args.connect_concurrency)
        cpu0, srv0, db0 = time.process_time(), cpu_s(args.pid), self._db_cpu()
        t0 = time.monotonic_ns()
        tasks = [asyncio.create_task(self.client(i, gate)) for i in range(args.n)]
        done, pending = await asyncio.wait(tasks, timeout=args.timeout)
        end = time.monotonic_ns()
        srv1, db1, cpu1 = cpu_s(args.pid), self._db_cpu(), time.process_time()
        for task in pending:
            task.cancel()
        stages = [t.result() for t in done if t.exception() is None]
        failures = collections.Counter(str(t.exception())[:160] for t in done if t.exception())
        result = {"kind": args.kind, "n": args.n, "ready": len(stages),
                  "failed_clients": sum(failures.values()), "timed_out": len(pending),
                  "connect_concurrency": args.connect_concurrency, "frame_bytes": st.size,
                  "frames": st.frames, "retries": dict(self.retries),
                  "server_cpu_s": round(srv1 - srv0, 3), "db_cpu_s": round(db1 - db0, 3),
                  "loadgen_cpu_s": round(cpu1 - cpu0, 3), "wall_s": round((end - t0) / 1e9, 3),
                  **self._spread(stages, t0), "failures": dict(failures.most_common(5))}
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(0.2)
        return result

    def _db_cpu(self) -> float:
        return children_cpu_s(self.args.pid) + (cpu_s(self.args.db_pid)
                                                if self.args.db_pid else 0.0)

    @staticmethod
    def _spread(stages: list[tuple[int, int, int]], t0: int) -> dict[str, Any]:
        """Per stage, when the last client reached it, s; per-client ready time p50/p99."""
        if not stages:
            return {}
        upgraded, acked, ready = (sorted(s[k] - t0 for s in stages) for k in range(3))
        return {"all_upgraded_s": round(upgraded[-1] / 1e9, 3),
                "all_acked_s": round(acked[-1] / 1e9, 3),
                "all_ready_s": round(ready[-1] / 1e9, 3),
                "ready_p50_ms": pct(ready, 0.50), "ready_p99_ms": pct(ready, 0.99)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.stormload", description=__doc__)
    p.add_argument("--kind", choices=["raw", "ours"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server process (CPU)")
    p.add_argument("--db-pid", type=int, default=0, help="the graph database (CPU)")
    p.add_argument("--n", type=int, required=True, help="clients reconnecting at once")
    p.add_argument("--setup", help="JSON with room, tokens and the `after` cursor (ours)")
    p.add_argument("--connect-concurrency", type=int, default=500,
                   help="clients in the connect stage (TCP + upgrade) at once")
    p.add_argument("--timeout", type=float, default=180.0, help="bound of the storm, s")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        p.error("loopback addresses only")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_and_print(lambda: Storm(args).run())


if __name__ == "__main__":
    main()

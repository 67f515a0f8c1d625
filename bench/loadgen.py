"""The load generator: N WebSocket subscribers and a publisher in one process (run it pinned to
its own core). Prints one JSON line with the results.

A minimal WebSocket client on asyncio protocols (a few µs per received frame) stands in for the
`websockets` client, which cannot read ~100k frames/s on one core; the loadgen's own CPU use is
reported so a saturated generator shows. Message contents carry `bench|<phase>|<i>|<ns>|`:
the send time (CLOCK_MONOTONIC, this process) read back by every subscriber.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson

MARK = b"bench|"
CONTENT_LEN = 100  # with the 5-field selection our `next` frame is ~240 bytes
SUBSCRIPTION = (
    "subscription($room: ID!) { roomEvents(roomId: $room) { ... on MessagePosted {"
    " message { id content seq createdAt author { displayName } } } } }")
SEND = ("mutation($r: ID!, $c: String!) {"
        " sendMessage(roomId: $r, input: {content: $c}) { id } }")
QUIET_S = 0.5  # no frame for this long: the server has nothing more in flight
CLK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def content(tag: str, i: int, ns: int) -> str:
    head = f"bench|{tag}|{i}|{ns}|"
    return head + "x" * max(0, CONTENT_LEN - len(head))


def raw_frame(text: str, i: int) -> bytes:
    """What the raw server broadcasts: shaped like our `next` frame."""
    message = {"id": str(uuid.uuid4()), "content": text, "seq": i,
               "createdAt": datetime.now(UTC).isoformat(),
               "author": {"displayName": "Bench Host"}}
    return orjson.dumps({"id": "1", "type": "next",
                         "payload": {"data": {"roomEvents": {"message": message}}}})


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def children_cpu_s(pid: int) -> float:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    return sum(cpu_s(int(k)) for k in kids)


class Stats:
    __slots__ = ("count", "errors", "first_error", "frames", "last", "last_frame", "lat",
                 "ready", "tag")

    def __init__(self) -> None:
        self.tag = b""
        self.count = 0
        self.last = 0
        self.lat: list[int] = []
        self.ready = 0
        self.frames = 0
        self.last_frame = 0
        self.errors = 0
        self.first_error = ""

    def reset(self, tag: str) -> None:
        self.tag, self.count, self.last, self.lat = tag.encode(), 0, 0, []


def _mask(opcode: int, data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    masked = int.from_bytes(data, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return head + key + masked.to_bytes(n, "big")


class WSClient(asyncio.Protocol):
    """A WebSocket client connection: handshake, masked sends, and a frame parser that hands
    each text frame to `_text` with the time the bytes arrived."""

    def __init__(self, stats: Stats, request: bytes) -> None:
        self.stats = stats
        self.request = request
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.acked: asyncio.Future[None] = loop.create_future()
        self.buf = b""
        self.frag = b""
        self.open = False
        self.warm = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        for fut in (self.upgraded, self.acked):
            if not fut.done():
                fut.set_exception(ConnectionError("closed during set-up"))

    def send_text(self, text: str) -> None:
        if self.transport is not None and self.open:
            self.transport.write(_mask(1, text.encode()))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buf = self.buf + data if self.buf else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if b" 101 " not in buf[:16]:
                self.upgraded.set_exception(ConnectionError(buf[:200].decode(errors="replace")))
                self.buf = b""
                return
            self.open = True
            self.upgraded.set_result(None)
            buf = buf[end + 4:]
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, length, hdr = buf[pos], buf[pos + 1] & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            end = pos + hdr + length
            if end > n:
                break
            self._frame(b0, buf[pos + hdr:end], now)
            pos = end
        self.buf = buf[pos:] if pos < n else b""

    def _frame(self, b0: int, payload: bytes, now: int) -> None:
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode in (0, 1):
            if not fin:
                self.frag += payload
                return
            if self.frag:
                payload, self.frag = self.frag + payload, b""
            self._text(payload, now)
        elif opcode == 9 and self.transport is not None:  # ping
            self.transport.write(_mask(10, payload))
        elif opcode == 8 and self.transport is not None:  # close
            self.stats.errors += 1
            self.stats.first_error = self.stats.first_error or f"closed: {payload[:80]!r}"
            self.transport.close()

    def _text(self, payload: bytes, now: int) -> None:
        st = self.stats
        st.frames += 1
        st.last_frame = now
        p = payload.find(MARK)
        if p < 0:
            if b'"connection_ack"' in payload:
                if not self.acked.done():
                    self.acked.set_result(None)
            elif b'"type":"error"' in payload or b'"errors"' in payload:
                st.errors += 1
                st.first_error = st.first_error or payload[:300].decode(errors="replace")
            return
        fields = payload[p + 6:p + 60].split(b"|", 3)
        if fields[0] == st.tag:
            st.count += 1
            st.last = now
            st.lat.append(now - int(fields[2]))
        elif fields[0] == b"w" and not self.warm:
            self.warm = True
            st.ready += 1


class Http:
    """One keep-alive HTTP/1.1 connection for POSTs (Content-Length responses only)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: str = "") -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"{headers}\r\n")
        self.writer.write(head.encode() + body)
        try:
            status_and_headers = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in status_and_headers.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            return int(status_and_headers[9:12]), await self.reader.readexactly(length)
        except Exception:
            self.writer.close()
            self.reader = self.writer = None
            raise


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ours = args.kind == "ours"
        self.stats = Stats()
        self.clients: list[WSClient] = []
        setup: dict[str, Any] = orjson.loads(Path(args.setup).read_bytes()) if self.ours else {}
        self.room: str = setup.get("room", "")
        self.tokens: list[str] = setup.get("tokens", [])
        self.auth = f"Authorization: Bearer {setup['host_token']}\r\n" if self.ours else ""
        self.pool: asyncio.Queue[Http] = asyncio.Queue()
        for _ in range(args.concurrency):
            self.pool.put_nowait(Http(args.host, args.port))

    # -- subscribers ---------------------------------------------------------------------

    def _request(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        path, proto = ("/graphql", "Sec-WebSocket-Protocol: graphql-transport-ws\r\n") \
            if self.ours else ("/ws", "")
        return (f"GET {path} HTTP/1.1\r\nHost: {self.args.host}:{self.args.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n{proto}\r\n").encode()

    async def _open_one(self, i: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            loop = asyncio.get_running_loop()
            _, client = await loop.create_connection(
                lambda: WSClient(self.stats, self._request()), self.args.host, self.args.port)
            self.clients.append(client)
            await asyncio.wait_for(client.upgraded, 30)
            if not self.ours:
                return
            token = self.tokens[i]
            client.send_text(orjson.dumps({"type": "connection_init", "payload": {
                "authorization": f"Bearer {token}"}}).decode())
            await asyncio.wait_for(client.acked, 30)
            client.send_text(orjson.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": SUBSCRIPTION, "variables": {"room": self.room}}}).decode())

    async def open_all(self) -> int:
        gate = asyncio.Semaphore(self.args.connect_concurrency)
        results = await asyncio.wait_for(asyncio.gather(
            *(self._open_one(i, gate) for i in range(self.args.n)), return_exceptions=True),
            self.args.timeout)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            self.stats.first_error = self.stats.first_error or repr(failed[0])
        return len(results) - len(failed)

    async def wait_ready(self, limit: float) -> None:
        """Publishes warm-up messages until every subscriber has received one: a subscription
        is live, and the server has worked off everything queued before it."""
        st, deadline, i = self.stats, time.monotonic() + limit, 0
        while st.ready < self.args.n and time.monotonic() < deadline:
            await self._post("w", i, time.monotonic_ns())
            i += 1
            sent = time.monotonic()
            await self._until(lambda: st.ready >= self.args.n or (
                time.monotonic() - max(sent, st.last_frame / 1e9) > QUIET_S), deadline)

    @staticmethod
    async def _until(done: Callable[[], bool], deadline: float) -> None:
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # -- publishing ----------------------------------------------------------------------

    def _body(self, tag: str, i: int, ns: int) -> tuple[str, bytes]:
        text = content(tag, i, ns)
        if self.ours:
            return "/graphql", orjson.dumps({"query": SEND,
                                             "variables": {"r": self.room, "c": text}})
        return "/publish", raw_frame(text, i)

    async def _post(self, tag: str, i: int, ns: int, conn: Http | None = None) -> None:
        http = conn or await self.pool.get()
        try:
            status, body = await http.post(*self._body(tag, i, ns), headers=self.auth)
            if status != 200 or b'"errors"' in body:
                raise RuntimeError(f"publish failed: {status} {body[:300]!r}")
        except Exception as exc:
            self.stats.errors += 1
            self.stats.first_error = self.stats.first_error or repr(exc)
        finally:
            self.pool.put_nowait(http)

    async def phase(self, tag: str, count: int, rate: float) -> dict[str, Any]:
        """Publishes `count` messages at `rate`/s (at most `concurrency` in flight) and waits
        until every subscriber has them (or the stream went quiet)."""
        st, n = self.stats, self.args.n
        st.reset(tag)
        cpu0, srv0, db0 = time.process_time(), cpu_s(self.args.pid), children_cpu_s(self.args.pid)
        tasks: set[asyncio.Task[None]] = set()
        t0, first = time.monotonic(), 0
        for i in range(count):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = await self.pool.get()
            ns = time.monotonic_ns()
            first = first or ns
            task = asyncio.create_task(self._post(tag, i, ns, conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        published = time.monotonic() - t0
        if tasks:
            await asyncio.wait(set(tasks), timeout=60)
        deadline = time.monotonic() + self.args.timeout
        await self._until(lambda: st.count >= n * count or (
            time.monotonic() - st.last_frame / 1e9 > max(2.0, 20 * QUIET_S)), deadline)
        wall = (st.last - first) / 1e9 if st.last else 0.0
        lat = sorted(st.lat)
        span = max(wall, 1e-9)

        def pct(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6, 2) if lat else -1.0

        return {
            "messages": count, "rate": rate, "expected": n * count, "deliveries": st.count,
            "deliveries_per_s": round(st.count / span), "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "max_ms": pct(1.0), "duration_s": round(wall, 3),
            "publish_s": round(published, 3),
            "loadgen_cpu": round((time.process_time() - cpu0) / span, 3),
            "server_cpu": round((cpu_s(self.args.pid) - srv0) / span, 3),
            "db_cpu": round((children_cpu_s(self.args.pid) - db0) / span, 3),
        }

    async def run(self) -> dict[str, Any]:
        args, st = self.args, self.stats
        rss0 = rss_kb(args.pid)
        t0 = time.monotonic()
        connected = await self.open_all()
        await self.wait_ready(args.timeout)
        ready_s = time.monotonic() - t0
        await asyncio.sleep(1.0)
        rss1 = rss_kb(args.pid)
        result: dict[str, Any] = {
            "kind": args.kind, "n": args.n, "connected": connected, "ready": st.ready,
            "ready_s": round(ready_s, 2), "frames_before_ready": st.frames,
            "rss_before_kb": rss0, "rss_after_kb": rss1,
            "kb_per_sub": round((rss1 - rss0) / max(1, args.n), 2),
        }
        if st.ready == args.n:
            result["latency"] = await self.phase("l", args.lat_messages, args.lat_rate)
            result["throughput"] = await self.phase("t", args.tput_messages, args.tput_rate)
        result["errors"], result["first_error"] = st.errors, st.first_error
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(0.5)
        return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--kind", choices=["raw", "ours"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server process (for RSS, CPU)")
    p.add_argument("--n", type=int, required=True, help="subscribers")
    p.add_argument("--setup", help="JSON with room, host_token, tokens (ours)")
    p.add_argument("--lat-messages", type=int, default=50)
    p.add_argument("--lat-rate", type=float, default=20.0, help="messages/s, latency phase")
    p.add_argument("--tput-messages", type=int, default=200)
    p.add_argument("--tput-rate", type=float, default=300.0, help="messages/s, throughput")
    p.add_argument("--concurrency", type=int, default=8, help="publishes in flight")
    p.add_argument("--connect-concurrency", type=int, default=100)
    p.add_argument("--timeout", type=float, default=240.0, help="bound of each wait, s")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        p.error("loopback addresses only")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_nofile()

    async def go() -> dict[str, Any]:
        return await LoadGen(args).run()

    try:
        import uvloop
    except ImportError:
        result = asyncio.run(go())
    else:
        result = uvloop.run(go())
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()

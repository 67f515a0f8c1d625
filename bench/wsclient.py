"""The load generator's clients: a minimal WebSocket client on asyncio protocols (a few µs per
received frame; the `websockets` client cannot read ~100k frames/s on one core) and a
keep-alive HTTP/1.1 POST client. Text frames carrying `bench|<phase>|<i>|<send µs>|` are
counted and timed into a shared `Stats`
(the send time is in µs since `T0`).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import cast

MARK = b"bench|"
T0 = time.monotonic_ns()  # send times travel as µs since this, to keep the frame small


def pct(values: list[int], q: float) -> float:
    """The q-quantile of sorted nanosecond values, in ms (-1 when there are none)."""
    return round(values[min(len(values) - 1, int(q * len(values)))] / 1e6, 2) if values else -1


class Stats:
    __slots__ = ("count", "errors", "first_error", "frames", "last", "last_frame", "lat",
                 "ready", "rtt", "size", "tag")

    def __init__(self) -> None:
        self.tag = b""
        self.count = 0
        self.last = 0
        self.lat: list[int] = []
        self.rtt: list[int] = []
        self.size = 0  # bytes of the last counted message's payload
        self.ready = 0
        self.frames = 0
        self.last_frame = 0
        self.errors = 0
        self.first_error = ""

    def reset(self, tag: str) -> None:
        self.tag, self.count, self.last, self.lat, self.rtt = tag.encode(), 0, 0, [], []


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
        for fut in (self.upgraded, self.acked):  # an unawaited failure is no warning
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
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
            st.size = len(payload)
            st.lat.append(now - T0 - 1000 * int(fields[2]))
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
        """Sends on the kept-alive connection; one that the server closed while idle (uvicorn
        drops keep-alive connections after 5 s) gets no byte back and is retried once on a
        new connection."""
        reused = self.writer is not None
        try:
            return await self._post(path, body, headers)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            return await self._post(path, body, headers)

    async def _post(self, path: str, body: bytes, headers: str) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"{headers}\r\n")
        try:
            self.writer.write(head.encode() + body)
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

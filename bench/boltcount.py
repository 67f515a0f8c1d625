"""Counts what our service asks the graph database, without touching the service: a TCP proxy
in front of the graph server's Bolt port (the service gets the proxy's address as NEO4J_URI)
that reads the client's side of each Bolt connection.

- **statements**: RUN messages (one Cypher statement each), classified by their text:
  `ping` (the health check's `RETURN 1 AS ok`), `audit` (the trail's batch writes, which
  create `:AuditEvent` nodes) and `request` (everything else: what operations run).
- **round trips**: the times a connection's client sent something after the server had
  answered (requests pipelined in one go, e.g. RUN+PULL, are one round trip), each given the
  class of the first statement in it; one without a statement takes the class of its
  transaction: a BEGIN that of the statement after it, a COMMIT that of the one before.
  Connection set-up (handshake, HELLO/LOGON) counts as `connect`.
- **wait**: per class, the time from each round trip's request to the last byte of its answer
  (seen at the proxy: what the service waited for the database, the proxy's hop included);
  also per statement (`per_query`: its text, collapsed; BEGIN and COMMIT round trips under
  their own names), to find the slow one.

Used only while counting (bench.httpbench), never during a timed run: the proxy costs a copy
of every byte.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HANDSHAKE_BYTES = 20  # magic 0x6060B017 + four proposed versions
MANIFEST = b"\x00\x00\x01\xff"  # the server chose handshake manifest v1 (Bolt 5.7+)
RUN, BEGIN, COMMIT, ROLLBACK, PULL, DISCARD, RESET = 0x10, 0x11, 0x12, 0x13, 0x3F, 0x2F, 0x0F
HELLO, LOGON, GOODBYE = 0x01, 0x6A, 0x02
NAMES = {RUN: "RUN", BEGIN: "BEGIN", COMMIT: "COMMIT", ROLLBACK: "ROLLBACK", PULL: "PULL",
         DISCARD: "DISCARD", RESET: "RESET", HELLO: "HELLO", LOGON: "LOGON",
         GOODBYE: "GOODBYE"}
PING_QUERY = "RETURN 1 AS ok"
QUERY_CHARS = 160  # of a statement's text, naming it in `per_query`


def classify(query: str) -> str:
    if query.strip() == PING_QUERY:
        return "ping"
    if "AuditEvent" in query:
        return "audit"
    return "request"


def _query_of(message: bytes) -> str:
    """The Cypher text of a RUN message (struct marker, signature, then a PackStream
    string); only as much as the first chunk holds."""
    if len(message) < 3:
        return ""
    marker, at = message[2], 3
    if 0x80 <= marker <= 0x8F:
        size = marker & 0x0F
    elif marker in (0xD0, 0xD1, 0xD2):
        width = {0xD0: 1, 0xD1: 2, 0xD2: 4}[marker]
        size = int.from_bytes(message[at:at + width], "big")
        at += width
    else:
        return ""
    return message[at:at + size].decode("utf-8", "replace")


@dataclass
class Counts:
    statements: collections.Counter[str] = field(default_factory=collections.Counter)
    round_trips: collections.Counter[str] = field(default_factory=collections.Counter)
    messages: collections.Counter[str] = field(default_factory=collections.Counter)
    wait_s: dict[str, float] = field(default_factory=dict)
    # "class: statement text" -> [round trips, seconds waited]
    per_query: dict[str, list[float]] = field(default_factory=dict)
    connections: int = 0
    unparsed: int = 0  # connections whose messages could not be read (an unknown handshake)

    def copy(self) -> Counts:
        return Counts(collections.Counter(self.statements), collections.Counter(self.round_trips),
                      collections.Counter(self.messages), dict(self.wait_s),
                      {k: list(v) for k, v in self.per_query.items()}, self.connections,
                      self.unparsed)

    def __sub__(self, other: Counts) -> Counts:
        wait = {k: v - other.wait_s.get(k, 0.0) for k, v in self.wait_s.items()}
        per_query = {}
        for key, (n, seconds) in self.per_query.items():
            n0, s0 = other.per_query.get(key, (0.0, 0.0))
            if n > n0:
                per_query[key] = [n - n0, seconds - s0]
        return Counts(self.statements - other.statements, self.round_trips - other.round_trips,
                      self.messages - other.messages, wait, per_query,
                      self.connections - other.connections, self.unparsed - other.unparsed)

    def waited(self, cls: str, seconds: float, query: str, first: bool) -> None:
        self.wait_s[cls] = self.wait_s.get(cls, 0.0) + seconds
        entry = self.per_query.setdefault(f"{cls}: {query}", [0.0, 0.0])
        entry[0] += first
        entry[1] += seconds


class _Connection:
    """One proxied connection: the client's bytes parsed into Bolt messages."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.buffer = bytearray()
        self.handshake_left = HANDSHAKE_BYTES
        self.parse = True
        self.message = bytearray()  # the message being reassembled from chunks
        self.server_spoke = True  # the next client bytes start a round trip
        self.burst_class: str | None = None  # None: no burst open; "": not classified yet
        self.burst_begins = False
        self.pending_begins = 0  # BEGIN round trips waiting for their transaction's statement
        self.last_class = "connect"
        self.server_first = bytearray()
        self.mark = 0.0  # the request, or the last answer's bytes, of the current round trip
        self.answering: str | None = None  # its class once answered ("": a pending BEGIN)
        self.burst_query = ""  # its first statement, or the name of its first message
        self.answered = False  # its answer has begun
        self.pending_wait = 0.0

    def from_server(self, data: bytes) -> None:
        now = time.perf_counter()
        if len(self.server_first) < 4:
            self.server_first += data[:4 - len(self.server_first)]
            if bytes(self.server_first) == MANIFEST:
                self.parse = False  # a longer handshake; round trips are still counted
                self.counts.unparsed += 1
        first = self.burst_class is not None
        if first:
            self.answering = self._close_burst()
        if self.answering is not None:
            if self.answering:
                self.counts.waited(self.answering, now - self.mark, self.burst_query, first)
            else:
                self.pending_wait += now - self.mark
        self.mark = now
        self.server_spoke = True

    def from_client(self, data: bytes) -> None:
        if self.server_spoke:
            self._close_burst()
            self.server_spoke = False
            self.burst_class = ""  # open: classified by its first statement
            self.answering, self.mark = None, time.perf_counter()
            self.burst_query = ""
        if not self.parse:
            return
        self.buffer += data
        if self.handshake_left:
            taken = min(self.handshake_left, len(self.buffer))
            del self.buffer[:taken]
            self.handshake_left -= taken
        while len(self.buffer) >= 2:
            size = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + size:
                break
            chunk = bytes(self.buffer[2:2 + size])
            del self.buffer[:2 + size]
            if size:
                self.message += chunk
            elif self.message:  # a 0-size chunk ends a message (alone: a NOOP)
                self._message(bytes(self.message))
                self.message.clear()

    def _message(self, message: bytes) -> None:
        signature = message[1] if len(message) > 1 else -1
        name = NAMES.get(signature, f"0x{signature:02X}")
        self.counts.messages[name] += 1
        if signature == BEGIN:
            self.burst_begins = True
        if not self.burst_query:
            self.burst_query = f"({name})"
        if signature == RUN:
            query = _query_of(message)
            self.last_class = classify(query)
            self.counts.statements[self.last_class] += 1
            if self.burst_query.startswith("("):
                self.burst_query = " ".join(query.split())[:QUERY_CHARS]
            if self.pending_begins:
                self._settle(self.last_class)
            if self.burst_class == "":
                self.burst_class = self.last_class

    def _settle(self, cls: str) -> None:
        """The BEGIN round trips waiting for a class get it."""
        self.counts.round_trips[cls] += self.pending_begins
        entry = self.counts.per_query.setdefault(f"{cls}: (BEGIN)", [0.0, 0.0])
        entry[0] += self.pending_begins
        self.counts.waited(cls, self.pending_wait, "(BEGIN)", False)
        self.pending_begins, self.pending_wait = 0, 0.0

    def _close_burst(self) -> str | None:
        """Counts the open round trip: its class, "" when that waits for the next statement
        (a BEGIN), None when none was open."""
        cls = self.burst_class
        if cls is None:
            return None
        if not cls:
            if self.burst_begins:
                self.pending_begins += 1
            else:
                cls = self.last_class
        if cls:
            self.counts.round_trips[cls] += 1
        self.burst_class, self.burst_begins = None, False
        return cls

    def close(self) -> None:
        self._close_burst()
        if self.pending_begins:
            self._settle(self.last_class)


class BoltCounter:
    """`async with BoltCounter(host, port) as proxy:` listens on `proxy.port`."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.counts = Counts()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def uri(self) -> str:
        return f"bolt://{self.host}:{self.port}"

    def snapshot(self) -> Counts:
        return self.counts.copy()

    async def __aenter__(self) -> BoltCounter:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self.counts.connections += 1
        conn = _Connection(self.counts)
        up = asyncio.create_task(self._pipe(client_r, server_w, conn.from_client))
        down = asyncio.create_task(self._pipe(server_r, client_w, conn.from_server))
        self._tasks |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
                self._tasks.discard(task)
            await asyncio.gather(up, down, return_exceptions=True)
            conn.close()
            for writer in (client_w, server_w):
                writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    seen: Callable[[bytes], None]) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                seen(data)
                writer.write(data)
                await writer.drain()

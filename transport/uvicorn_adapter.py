"""The one place that knows uvicorn's WebSocket internals.

The fan-out writes finished frames straight to the socket's transport and asks the server's
protocol whether the socket is backed up. Neither is part of ASGI: both read private attributes
of uvicorn's `websockets-sansio` protocol (`conn`, `transport`, `writable`). Everything here
degrades to plain ASGI `send` when those attributes are not found, and
tests/test_uvicorn_adapter.py fails loudly when an upgrade moves them, so the fast path cannot
disappear without anyone noticing.

Per socket, uvicorn also keeps what an open socket no longer needs: its handshake (request and
response, headers and all) and an asyncio.Queue for what it receives (four deques). Once a
socket is accepted the first is dropped and the second replaced by an Inbox
(`release_handshake`, `slim_receive_queue`): ~3.5 KB less per idle socket. The same tests
check that uvicorn still reads the handshake only while completing it and uses its queue
only as the Inbox does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.protocol import State

log = logging.getLogger(__name__)
Send = Callable[[dict[str, Any]], Awaitable[None]]
SANSIO_PROTOCOL = "WebSocketsSansIOProtocol"
# What uvicorn must be run with for the direct path (app.main and the tests use these).
WS_IMPLEMENTATION = "websockets-sansio"


def uvicorn_ws_options(heartbeat_interval: float | None,
                       max_message_bytes: int) -> dict[str, Any]:
    """uvicorn's WebSocket settings: the sans-I/O protocol (the fastest measured), no
    per-message deflate (every frame would be compressed per connection, and the direct path
    writes uncompressed frames), pings on the heartbeat interval, and messages of at most
    `max_message_bytes` (WS_MAX_MESSAGE_BYTES: a larger one closes the socket with 1009
    before it is buffered whole)."""
    options: dict[str, Any] = {"ws": WS_IMPLEMENTATION, "ws_per_message_deflate": False,
                               "ws_max_size": max_message_bytes}
    if heartbeat_interval is not None:
        options["ws_ping_interval"] = heartbeat_interval
        options["ws_ping_timeout"] = heartbeat_interval
    return options


RAW_SEND_KEY = "collab.raw_send"


class RawSendMiddleware:
    """Keeps the server's own ASGI `send` in the scope (middleware may wrap the one the app
    sees): the fan-out writes frames with it and asks the server's protocol about it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        # Not a coroutine function: it hands back the inner app's awaitable, so a socket's
        # await chain (held for as long as it is open) has no frame of its own for this.
        if scope["type"] == "websocket":
            scope[RAW_SEND_KEY] = send
        result: Awaitable[None] = self.app(scope, receive, send)
        return result


def raw_send(websocket: Any) -> Send:
    """The server's `send` for a Starlette WebSocket (its own wrapped one as a fallback)."""
    send: Send = websocket.scope.get(RAW_SEND_KEY) or websocket._send
    return send


def _protocol(send: Send) -> Any:
    # uvicorn's ASGI `send` for a WebSocket is a bound method of its protocol object.
    return getattr(send, "__self__", None)


def writable_probe(send: Send) -> Callable[[], bool]:
    """True while the socket's transport takes data without buffering past its high mark."""
    protocol = _protocol(send)
    writable = getattr(protocol, "writable", None)
    if isinstance(writable, asyncio.Event):
        return writable.is_set
    transport = getattr(protocol, "transport", None)
    if transport is not None and hasattr(transport, "get_write_buffer_size"):
        high = transport.get_write_buffer_limits()[1]
        return lambda: bool(transport.get_write_buffer_size() < high)
    return lambda: False  # unknown server: always go through the drain task


def direct_writer(send: Send) -> Callable[[bytes], bool] | None:
    """For uvicorn's websockets-sansio protocol: a function writing finished frames to its
    transport. Only while the connection is open and without extensions (no per-message
    deflate), so the bytes are exactly what the protocol itself would have written. None for
    any other server or configuration: frames then go through ASGI `send`."""
    protocol = _protocol(send)
    conn = getattr(protocol, "conn", None)
    transport = getattr(protocol, "transport", None)
    if type(protocol).__name__ != SANSIO_PROTOCOL or conn is None:
        return None
    if transport is None or getattr(conn, "extensions", None):
        return None
    return _DirectWriter(conn, transport)


class _DirectWriter:
    """direct_writer's function: an object rather than a closure (one per socket)."""

    __slots__ = ("conn", "transport")

    def __init__(self, conn: Any, transport: Any) -> None:
        self.conn = conn
        self.transport = transport

    def __call__(self, data: bytes) -> bool:
        if self.conn.state is not State.OPEN or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True


# What uvicorn's sans-I/O protocol keeps of the handshake: the HTTP request and response,
# headers and all (~2 KB a socket), for as long as the socket is open.
HANDSHAKE_ATTRIBUTES = ("request", "response")


def release_handshake(send: Send) -> bool:
    """Drops uvicorn's copy of a completed handshake; True when it did. uvicorn reads it only
    while completing the handshake (handle_connect, and `send` before it is complete): the
    scope keeps what the app reads (headers, client, path)."""
    protocol = _protocol(send)
    if type(protocol).__name__ != SANSIO_PROTOCOL or not getattr(
            protocol, "handshake_complete", False):
        return False
    if not all(hasattr(protocol, name) for name in HANDSHAKE_ATTRIBUTES):
        return False
    for name in HANDSHAKE_ATTRIBUTES:
        setattr(protocol, name, None)
    return True


def handshake_readers() -> dict[str, set[str]]:
    """Which methods of uvicorn's sans-I/O protocol read each attribute `release_handshake`
    drops (tests/test_uvicorn_adapter.py: only those that complete the handshake may)."""
    from uvicorn.protocols.websockets import websockets_sansio_impl as impl

    cls = getattr(impl, SANSIO_PROTOCOL)
    found: dict[str, set[str]] = {name: set() for name in HANDSHAKE_ATTRIBUTES}
    for method, function in vars(cls).items():
        names = getattr(getattr(function, "__code__", None), "co_names", ())
        for name in HANDSHAKE_ATTRIBUTES:
            if name in names:
                found[name].add(method)
    return found


class Inbox:
    """What uvicorn's sans-I/O protocol does with its receive queue (`put_nowait`, `get`,
    `empty`: an unbounded asyncio.Queue), without what it does not use. An asyncio.Queue holds
    three deques and an Event with a fourth (~3 KB) for as long as the socket is open; this
    holds a list only while messages or a reader wait. Semantics are asyncio.Queue's (3.11)."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)
        self._wake_next()

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.pop(0)
        if not self._items:
            self._items = None
        return item

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()  # just in case it is not done yet
                if self._getters is not None and getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_next()  # the wake-up it got goes to the next reader
                raise
        return self.get_nowait()

    def _wake_next(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not getters:
            self._getters = None


# How uvicorn's sans-I/O protocol uses `self.queue` (tests/test_uvicorn_adapter.py compares
# its source with this): Inbox does these, as asyncio.Queue does them.
QUEUE_USES = frozenset({"put_nowait", "get", "empty"})


def slim_receive_queue(send: Send) -> bool:
    """Gives uvicorn's sans-I/O protocol an Inbox for its receive queue; True when it did.
    Only while nothing waits on the queue (the app's receive loop, between two messages):
    what is queued moves over in order."""
    protocol = _protocol(send)
    queue = getattr(protocol, "queue", None)
    if type(protocol).__name__ != SANSIO_PROTOCOL or type(queue) is not asyncio.Queue:
        return False
    inbox = Inbox()
    while not queue.empty():
        inbox.put_nowait(queue.get_nowait())
    protocol.queue = inbox
    return True


def queue_uses() -> set[str]:
    """What uvicorn's sans-I/O protocol calls on `self.queue`, read from its source."""
    import inspect
    import re

    from uvicorn.protocols.websockets import websockets_sansio_impl as impl

    source = inspect.getsource(getattr(impl, SANSIO_PROTOCOL))
    return set(re.findall(r"self\.queue\.(\w+)", source))


def abort_probe(send: Send) -> Callable[[], None] | None:
    """Cuts the TCP connection (a peer that cannot even take a close frame)."""
    transport = getattr(_protocol(send), "transport", None)
    abort = getattr(transport, "abort", None)
    return abort if callable(abort) else None


def close_code(send: Send) -> int | None:
    """The code a finished socket closed with, from the sans-I/O connection (websockets'
    public `close_sent`/`close_rcvd`): the first close frame of the handshake, whoever sent
    it (the fan-out's own closes and uvicorn's 1009/1011/1012 included); 1006 when the
    connection dropped without one. None for any other server (observability/sockets.py
    then takes the close it saw in ASGI terms)."""
    conn = getattr(_protocol(send), "conn", None)
    if conn is None or not hasattr(conn, "close_rcvd_then_sent"):
        return None
    sent, received = conn.close_sent, conn.close_rcvd
    if received is not None and (sent is None or conn.close_rcvd_then_sent):
        return int(received.code)
    return 1006 if sent is None else int(sent.code)


def sansio_internals_present() -> bool:
    """What start-up can check before any socket exists: uvicorn's sans-I/O protocol class
    still has the attributes the direct path reads (set in its __init__)."""
    try:
        from uvicorn.protocols.websockets import websockets_sansio_impl as impl
    except ImportError:
        return False
    cls = getattr(impl, SANSIO_PROTOCOL, None)
    if cls is None:
        return False
    names = cls.__init__.__code__.co_names
    return all(name in names for name in ("conn", "transport", "writable"))


def log_fanout_path(ws_implementation: str) -> bool:
    """Logs, at start-up, which write path the fan-out will use; True for the direct one."""
    direct = ws_implementation == WS_IMPLEMENTATION and sansio_internals_present()
    if direct:
        log.info("fan-out: frames written directly to uvicorn's %s transport",
                 WS_IMPLEMENTATION)
    else:
        log.warning("fan-out: frames go through ASGI send (slower): run uvicorn with "
                    "ws=%r; found ws=%r%s", WS_IMPLEMENTATION, ws_implementation,
                    "" if sansio_internals_present() else
                    " and uvicorn's sans-I/O protocol no longer has the expected attributes")
    return direct

"""The one place that knows uvicorn's WebSocket internals.

The fan-out writes finished frames straight to the socket's transport and asks the server's
protocol whether the socket is backed up. Neither is part of ASGI: both read private attributes
of uvicorn's `websockets-sansio` protocol (`conn`, `transport`, `writable`). Everything here
degrades to plain ASGI `send` when those attributes are not found, and
tests/test_uvicorn_adapter.py fails loudly when an upgrade moves them, so the fast path cannot
disappear without anyone noticing.
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

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND_KEY] = send
        await self.app(scope, receive, send)


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

    def write(data: bytes) -> bool:
        if conn.state is not State.OPEN or transport.is_closing():
            return False
        transport.write(data)
        return True

    return write


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

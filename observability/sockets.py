"""WebSocket figures at the edge of the app (ASGI): collab_ws_connections (open
graphql-transport-ws sockets) and collab_ws_disconnects_total{code}, the code each accepted
socket ended with, whoever closed it (our handler, strawberry, the fan-out's slow-consumer
close, uvicorn itself for 1009/1011/1012, or the client)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from observability.metrics import (
    RATE_LIMITED,
    WS_CONNECTIONS,
    WS_DISCONNECTS,
    close_code_label,
)

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
CloseCodeOf = Callable[[Any], "int | None"]
PROTOCOL = "graphql-transport-ws"
ABNORMAL = 1006  # RFC 6455: the connection dropped without a close frame
TOO_BIG = 1009  # closed by the server itself (WS_MAX_MESSAGE_BYTES): a limit's refusal


class SocketMetrics:
    """`close_code(send)` reads the code from the server's protocol when it can (frames the
    fan-out sends bypass ASGI: transport/uvicorn_adapter.py); otherwise the first close seen
    in ASGI terms is taken. Place it inside RawSendMiddleware: `send` must stay the
    server's own for the fan-out."""

    def __init__(self, app: Any, *, close_code: CloseCodeOf) -> None:
        self.app = app
        self.close_code = close_code

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        seen = _Seen()

        async def sending(message: Message) -> None:
            seen.sent(message)
            await send(message)

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect" and seen.code is None:
                seen.code = int(message.get("code", ABNORMAL))
            return message

        try:
            await self.app(scope, receiving, sending)
        finally:
            if seen.accepted:
                self._closed(self.close_code(send) or seen.code or ABNORMAL, seen.counted)

    @staticmethod
    def _closed(code: int, counted: bool) -> None:
        if counted:
            WS_CONNECTIONS.dec()
        WS_DISCONNECTS.labels(close_code_label(code)).inc()
        if code == TOO_BIG:
            RATE_LIMITED.labels("message_size").inc()


class _Seen:
    __slots__ = ("accepted", "code", "counted")

    def __init__(self) -> None:
        self.accepted = False  # the handshake completed: it ends with a close code
        self.counted = False  # ... and as graphql-transport-ws: an open socket meanwhile
        self.code: int | None = None

    def sent(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept" and not self.accepted:
            self.accepted = True
            if message.get("subprotocol") == PROTOCOL:
                self.counted = True
                WS_CONNECTIONS.inc()
        elif kind == "websocket.close" and self.code is None:
            self.code = int(message.get("code", 1000))

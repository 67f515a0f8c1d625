"""graphql-transport-ws with roomEvents served by the room streams (rendered once per
group), and every other operation by strawberry; close codes as the protocol defines them.

How an operation ends, as graphql-ws's reference server does it: a document that does not
validate gets an `error` frame; anything refused or failing once it runs (not a participant,
a bad cursor, removed from the room, the database down) gets `next` with `errors` and then
`complete`. Gateways pass the latter on with its codes intact (../shared/notes/federation.md).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from json import JSONDecodeError
from typing import Any

from graphql import OperationType
from starlette.websockets import WebSocketDisconnected as StarletteDisconnected
from starlette.websockets import WebSocketState
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)

from auth import AuthError, parse_bearer
from graph_db.driver import DatabaseUnavailable
from observability import logs
from observability.metrics import rate_limited
from observability.operations import SocketRecord
from realtime.subscriber import Outbox
from realtime.tasks import spawn
from resolvers.errors import Unauthenticated
from transport import uvicorn_adapter
from transport.deadlines import deadlines
from transport.documents import Compiled
from transport.errors import RequestTimeout
from transport.limits import SubscriptionLimitExceeded
from transport.rate_limit import RateLimited
from transport.ws_limits import (
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_TOO_MANY_MESSAGES,
    SocketLimits,
    TokenBucket,
)
from transport.ws_messages import bearer_of, well_formed
from transport.ws_room_events import Op, RoomEventsHandler, RoomOperation

log = logging.getLogger(__name__)
FLUSH_BEFORE_CLOSE_S = 1.0
TRY_AGAIN_LATER = 1013  # RFC 6455; graphql-ws clients reconnect after it
_fallback_warned = False


class TransportWSHandler(RoomEventsHandler):
    _expiry: int | None = None  # the token's deadline (transport.deadlines)
    _bucket: TokenBucket | None = None
    _slot: tuple[str, str] | None = None  # (user, connection) counted by WS_MAX_CONNECTIONS
    _closing = False

    def outbox(self) -> Outbox:
        if self._outbox is None:
            send = uvicorn_adapter.raw_send(self.websocket.ws)  # type: ignore[attr-defined]
            direct = uvicorn_adapter.direct_writer(send)
            if direct is None:
                _warn_fallback()
            self._outbox = Outbox(send, uvicorn_adapter.writable_probe(send),
                                  uvicorn_adapter.abort_probe(send), direct)
        return self._outbox

    async def handle(self) -> None:
        """strawberry's loop (`handle` reading `iter_json`), in one frame: its async
        generator's frame, and the frames of Starlette's `receive_text`, held the last
        message (the subscribe, with its query) for as long as the socket lived."""
        self.on_request_accepted()
        ws = self.websocket.ws  # type: ignore[attr-defined]
        # Accepted, and nothing awaits the socket's receive queue yet: what uvicorn keeps per
        # socket and no longer needs goes (its handshake), or gets lighter (its queue).
        send = uvicorn_adapter.raw_send(ws)
        uvicorn_adapter.release_handshake(send)
        uvicorn_adapter.slim_receive_queue(send)
        try:
            try:
                while ws.application_state != WebSocketState.DISCONNECTED:
                    if ws.application_state != WebSocketState.CONNECTED:  # as receive_text
                        raise StarletteDisconnected(
                            'WebSocket is not connected. Need to call "accept" first.')
                    received = await ws.receive()
                    if received["type"] == "websocket.disconnect":
                        break
                    message = self._decoded(received)
                    del received  # nothing of a message stays while the socket idles
                    await self.handle_message(message)
                    del message
            except NonTextMessageReceived:
                await self.handle_invalid_message("WebSocket message type must be text")
            except NonJsonMessageReceived:
                await self.handle_invalid_message("WebSocket message must be valid JSON")
        except WebSocketDisconnected:
            pass
        finally:
            await self.shutdown()

    def _decoded(self, received: dict[str, Any]) -> Any:
        """A text message's JSON, with the errors strawberry's `iter_json` raises."""
        try:
            text = received["text"]
        except KeyError as exc:
            raise NonTextMessageReceived from exc
        try:
            return self.view.decode_json(text)
        except JSONDecodeError as exc:
            raise NonJsonMessageReceived from exc

    @property
    def limits(self) -> SocketLimits:
        limits: SocketLimits = self.view.socket_limits  # type: ignore[attr-defined]
        return limits

    async def shutdown(self) -> None:
        if self._outbox is not None:
            self._outbox.closed = True
        if self._expiry is not None:
            deadlines().cancel(self._expiry)
            self._expiry = None
        try:
            await super().shutdown()
        finally:
            if self._record is not None:
                self._record.close()
                self._record = None
            if self._slot is not None:
                await self.view.connections.release(*self._slot)  # type: ignore[attr-defined]
                self._slot = None

    async def handle_message(self, message: Any) -> None:
        if self._closing:
            return
        if self._bucket is None:
            self._bucket = TokenBucket(self.limits.message_rate, self.limits.message_burst)
        if not self._bucket.take():
            rate_limited("messages")
            await self._close(CLOSE_TOO_MANY_MESSAGES, "too many messages")
            return
        # strawberry catches only KeyError: a frame of another shape (a JSON array, a string
        # payload, a non-string query) would crash the connection (1006) instead of 4400.
        if not well_formed(message):
            await self.handle_invalid_message("Failed to parse message")
            return
        await super().handle_message(message)

    async def _close(self, code: int, reason: str) -> None:
        self._closing = True
        await self.websocket.close(code=code, reason=reason[:120])

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if not await self._admit_connection(message):
            return
        try:
            await super().handle_connection_init(message)
        except DatabaseUnavailable:  # the user could not be recorded: come back shortly
            await self.websocket.close(code=TRY_AGAIN_LATER,
                                       reason="database unavailable: retry shortly")
            return
        if self.connection_init_received:
            # Both done with once the socket is initialised (strawberry keeps them): the
            # timeout task, cancelled, holds its CancelledError and traceback; the payload
            # holds the token.
            self.connection_init_timeout_task = None
            self.context.connection_params = None
        if self.connection_acknowledged and self._expiry is None:
            self._arm_expiry()
        if self.connection_acknowledged and self._record is None:
            viewer = self.context.viewer
            self._record = SocketRecord(self.context.request_id, viewer.id)
            # Every line this socket's tasks log carries its request id and user.
            logs.bind(request_id=self.context.request_id, user_id=viewer.id)

    async def send_message(self, message: Any) -> None:
        if self._record is not None:  # settles operations by their frames (not roomEvents')
            self._record.sent(message)
        await super().send_message(message)

    async def _admit_connection(self, message: ConnectionInitMessage) -> bool:
        """WS_MAX_CONNECTIONS, before the ack: False when refused (then closed with 4430).
        A missing or bad token is left to strawberry and on_ws_connect (4403)."""
        if self.connection_init_received or self._slot is not None:
            return True  # a second connection_init: 4429 from strawberry
        payload = message.get("payload")
        header = bearer_of(payload if isinstance(payload, dict) else None)
        if header is None:
            return True
        try:
            claims = await self.context.services.verifier.verify(parse_bearer(header))
        except AuthError:
            return True
        connections = self.view.connections  # type: ignore[attr-defined]
        slot = await connections.acquire(claims.user_id)
        if slot is None:
            rate_limited("connections")
            await self._close(CLOSE_TOO_MANY_CONNECTIONS,
                              f"more than {connections.limit} connections for this user")
            return False
        self._slot = (claims.user_id, slot)
        self.context.claims = claims
        return True

    async def cleanup_operation(self, operation_id: str) -> None:
        if self._record is not None:
            self._record.finish(operation_id)
        operation = self.operations.get(operation_id)
        if operation is None:
            return
        operation.completed = True  # the client completed it: nothing more may follow
        if operation.task is not None:
            await super().cleanup_operation(operation_id)  # cancelled: its task cleans up
            return
        del self.operations[operation_id]  # a live roomEvents, which holds no task
        if isinstance(operation, RoomOperation):
            try:
                await self._release(operation, None)
            except Exception:  # as a failure in its task would have been: logged
                log.exception("roomEvents: releasing %s failed", operation_id)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged or message["id"] in self.operations:
            await super().handle_subscribe(message)  # 4401 and 4409, as the protocol says
            return
        payload = message["payload"]
        assert self._record is not None  # acknowledged
        record = self._record.begin(message["id"])
        # Persisted operations (transport/persisted.py): trusted documents, hashes.
        refusal = await self.view.persisted.admit(payload)  # type: ignore[attr-defined]
        if refusal:
            await self.send_message({"id": message["id"], "type": "error", "payload": refusal})
            return
        compiled: Compiled = self.view.documents.get(  # type: ignore[attr-defined]
            payload["query"], payload.get("operationName"))
        record.operation(compiled.operation, payload.get("operationName"))
        if compiled.syntax_error:
            self._record.settle(message["id"], compiled.errors, refused=True)
            await self._close(4400, compiled.errors[0].message)
            return
        if await self._refused(message["id"], compiled, payload.get("variables")):
            return
        record.executed = True
        if not compiled.room_events:
            await super().handle_subscribe(message)
            return
        self.start_room_events(message["id"], payload, compiled)

    async def _refused(self, operation_id: str, compiled: Compiled,
                       variables: dict[str, Any] | None) -> bool:
        """Admission (transport/documents.py), the user's rate budget (shared with HTTP) and
        WS_MAX_SUBSCRIPTIONS; True when the operation was refused (and told so)."""
        errors = compiled.refusal(variables)
        try:
            await self.view.rate.charge(  # type: ignore[attr-defined]
                f"user:{self.context.viewer.id}", 1 if errors else compiled.weight)
        except RateLimited as refused:
            errors = [refused]
        else:
            if errors:  # as graphql-ws answers a document that does not validate
                await self.send_message({"id": operation_id, "type": "error",
                                         "payload": [e.formatted for e in errors]})
                return True
            if len(self.operations) >= self.limits.max_subscriptions:
                rate_limited("subscriptions")
                errors = [SubscriptionLimitExceeded(self.limits.max_subscriptions)]
        if errors:  # refused, not invalid: `next` with the errors, then `complete`
            await self.send_message({"id": operation_id, "type": "next",
                                     "payload": {"data": None,
                                                 "errors": [e.formatted for e in errors]}})
            await self.send_message({"id": operation_id, "type": "complete"})
            return True
        return False

    async def run_operation(self, operation: Op) -> None:
        """strawberry's, with REQUEST_TIMEOUT for queries and mutations."""
        compiled: Compiled = self.view.documents.get(  # type: ignore[attr-defined]
            operation.query, operation.operation_name)
        if compiled.operation is None or \
                compiled.operation.operation is OperationType.SUBSCRIPTION:
            await super().run_operation(operation)
            return
        try:
            async with asyncio.timeout(self.limits.timeout) as deadline:
                await super().run_operation(operation)
        except TimeoutError:
            if not deadline.expired():
                raise
            error = RequestTimeout(self.limits.timeout)
            await operation.send_operation_message(
                {"id": operation.id, "type": "next",
                 "payload": {"data": None, "errors": [error.formatted]}})
            await operation.send_operation_message({"id": operation.id, "type": "complete"})

    # -- token expiry ------------------------------------------------------------------------

    def _arm_expiry(self) -> None:
        """A socket lives no longer than its token. Each open operation is told why first:
        graphql-ws clients retry a 4403 close silently for about a minute."""
        expires_at = self.context.viewer.claims.expires_at
        delay = max((expires_at - datetime.now(UTC)).total_seconds(), 0.0)
        self._expiry = deadlines().add(asyncio.get_running_loop().time() + delay,
                                       self._expire)

    def _expire(self) -> None:
        self._expiry = None
        spawn(self._token_expired())

    async def _token_expired(self) -> None:
        error = Unauthenticated("token expired: reconnect with a fresh token")
        for operation in list(self.operations.values()):
            await self._finish(operation, [error])
            self.stop_operation(operation)
        if self._outbox is not None:
            await self._outbox.flushed(FLUSH_BEFORE_CLOSE_S)
        try:
            await self.websocket.close(code=4403, reason="token expired")
        except Exception:  # the peer went away meanwhile
            log.debug("close of a finished socket", exc_info=True)


def _warn_fallback() -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        log.warning("fan-out: this server's WebSocket protocol is not uvicorn's %s; frames go "
                    "through ASGI send (slower)", uvicorn_adapter.WS_IMPLEMENTATION)

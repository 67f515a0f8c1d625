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
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from graphql import FieldNode, GraphQLError, OperationType
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)

from auth import AuthError, parse_bearer
from graph_db.driver import DatabaseUnavailable
from graph_db.models import Role
from observability import logs
from observability.metrics import rate_limited
from observability.operations import SocketRecord
from realtime.subscriber import Outbox, Subscriber
from realtime.tasks import spawn
from resolvers import audit, room_events
from resolvers.context import Context
from resolvers.errors import Unauthenticated, masked
from transport import uvicorn_adapter
from transport.documents import ROOM_EVENTS_FIELD, Compiled
from transport.errors import RequestTimeout
from transport.fanout import RenderSpec, frame_prefix
from transport.limits import SubscriptionLimitExceeded
from transport.rate_limit import RateLimited
from transport.ws_limits import (
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_TOO_MANY_MESSAGES,
    SocketLimits,
    TokenBucket,
)
from transport.ws_messages import bearer_of, coded, well_formed

log = logging.getLogger(__name__)
FLUSH_BEFORE_CLOSE_S = 1.0
TRY_AGAIN_LATER = 1013  # RFC 6455; graphql-ws clients reconnect after it
_fallback_warned = False

Op = Operation[Context, None]


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    _outbox: Outbox | None = None
    _expiry: asyncio.TimerHandle | None = None
    _bucket: TokenBucket | None = None
    _slot: tuple[str, str] | None = None  # (user, connection) counted by WS_MAX_CONNECTIONS
    _closing = False
    _record: SocketRecord | None = None  # once acknowledged: metrics and operation lines

    def outbox(self) -> Outbox:
        if self._outbox is None:
            send = uvicorn_adapter.raw_send(self.websocket.ws)  # type: ignore[attr-defined]
            direct = uvicorn_adapter.direct_writer(send)
            if direct is None:
                _warn_fallback()
            self._outbox = Outbox(send, uvicorn_adapter.writable_probe(send),
                                  uvicorn_adapter.abort_probe(send), direct)
        return self._outbox

    @property
    def limits(self) -> SocketLimits:
        limits: SocketLimits = self.view.socket_limits  # type: ignore[attr-defined]
        return limits

    async def shutdown(self) -> None:
        if self._outbox is not None:
            self._outbox.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
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
        if operation is not None:
            operation.completed = True  # the client completed it: nothing more may follow
        await super().cleanup_operation(operation_id)

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
        operation = Operation(self, message["id"], payload["query"], payload.get("variables"),
                              payload.get("operationName"))
        operation.task = asyncio.create_task(self._room_events(operation, compiled))
        operation.task.add_done_callback(self._task_done)
        self.operations[message["id"]] = operation

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

    # -- roomEvents ----------------------------------------------------------------------

    async def _room_events(self, operation: Op, compiled: Compiled) -> None:
        """The operation's task. However it ends, the client is told, and its id is free
        for reuse."""
        try:
            await self._follow(operation, compiled)
        except asyncio.CancelledError:
            raise
        except GraphQLError as error:  # refused: not a participant, a bad cursor, ...
            self._settle(operation, [error])
            await self._finish(operation, [error])
        except Exception as exc:
            request_id = uuid.uuid4().hex[:16]
            public = masked(exc, request_id)
            log.error("roomEvents failed with %s [request %s, connection %s]",
                      public.code, request_id, self.context.request_id,
                      exc_info=exc)
            self._settle(operation, [public])
            await self._finish(operation, [public])
        finally:
            self._forget(operation)

    async def _follow(self, operation: Op, compiled: Compiled) -> None:
        hub = self.context.services.hub
        token = self.context.start_operation()  # loaders for the checks only, then released
        try:
            variables, start = await self._start(operation, compiled)
        finally:
            self.context.end_operation(token)
        # The subscribe message is not needed any more; a subscription may live for hours.
        operation.query, operation.variables = "", None
        sub = Subscriber(
            room_id=str(start.room.id), user_id=self.context.viewer.id, manager=start.manager,
            admin=self.context.viewer.role is Role.ADMIN,
            group_key=self._group_key(variables, compiled),
            prefix=frame_prefix(operation.id), outbox=self.outbox(),
            spec=RenderSpec(compiled, variables, self.context))
        with audit.subscription_span(self.context, sub.room_id) as ending:
            def on_end(code: str | None, text: str) -> None:
                ending.code = code
                self._end(operation, code, text)
            sub.on_end = on_end
            stream = await hub.attach(sub, start.after_seq)
            try:
                if not await room_events.still_participant(self.context.db, sub.room_id,
                                                           sub.user_id):
                    on_end("FORBIDDEN", "you are no longer a participant")
                await hub.serve(sub, stream)
            finally:
                await hub.detach(sub)

    async def _start(self, operation: Op, compiled: Compiled
                     ) -> tuple[dict[str, Any], room_events.StreamStart]:
        assert compiled.operation is not None
        schema = self.view.documents.schema  # type: ignore[attr-defined]
        coerced = get_variable_values(schema, compiled.operation.variable_definitions or [],
                                      operation.variables or {}, hide_suggestions=not
                                      self.view.documents.admission.suggestions)  # type: ignore[attr-defined]
        if isinstance(coerced, list):
            error = coerced[0]
            error.extensions = {"code": "BAD_USER_INPUT"}
            raise error
        field = next(s for s in compiled.operation.selection_set.selections
                     if isinstance(s, FieldNode) and s.name.value == ROOM_EVENTS_FIELD)
        field_def = schema.subscription_type.fields[ROOM_EVENTS_FIELD]
        args = get_argument_values(field_def, field, coerced)
        start = await room_events.authorize(self.context, str(args["roomId"]), args.get("after"))
        if self._record is not None:  # its set-up is what a subscription's line times
            self._record.finish(operation.id)
        return operation.variables or {}, start

    def _group_key(self, variables: dict[str, Any], compiled: Compiled) -> tuple[Any, ...]:
        """Same document, same variables, same viewer-dependence: same frames. (The stream
        adds what the subscriber may see.)"""
        key = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS).decode()
        viewer = self.context.viewer.id if compiled.viewer_dependent else None
        return (id(compiled), key, viewer)

    def _end(self, operation: Op, code: str | None, text: str) -> None:
        """The stream ended the subscription (removed from the room: FORBIDDEN; the room
        closed: None, a plain `complete`)."""
        spawn(self._finish(operation, None if code is None else [coded(text, code)]))
        if operation.task is not None:
            operation.task.cancel()

    # -- ending operations -----------------------------------------------------------------

    def _forget(self, operation: Op) -> None:
        """Frees the operation's id, unless the client already reused it for another."""
        if self.operations.get(operation.id) is operation:
            del self.operations[operation.id]

    async def _final(self, operation: Op, frames: list[dict[str, Any]]) -> None:
        """The operation's last frames, through the outbox so they follow its events."""
        if operation.completed:
            return
        operation.completed = True
        self._forget(operation)
        outbox = self.outbox()
        for frame in frames:
            await outbox.push(orjson.dumps(frame).decode())

    def _settle(self, operation: Op, errors: list[GraphQLError]) -> None:
        """A roomEvents that failed to start: its operation line (a no-op once started)."""
        if self._record is not None:
            self._record.settle(operation.id, errors)

    async def _finish(self, operation: Op, errors: list[GraphQLError] | None) -> None:
        frames: list[dict[str, Any]] = []
        if errors:
            frames.append({"id": operation.id, "type": "next",
                           "payload": {"data": None,
                                       "errors": [e.formatted for e in errors]}})
        frames.append({"id": operation.id, "type": "complete"})
        await self._final(operation, frames)

    # -- token expiry ------------------------------------------------------------------------

    def _arm_expiry(self) -> None:
        """A socket lives no longer than its token. Each open operation is told why first:
        graphql-ws clients retry a 4403 close silently for about a minute."""
        expires_at = self.context.viewer.claims.expires_at
        delay = max((expires_at - datetime.now(UTC)).total_seconds(), 0.0)
        self._expiry = asyncio.get_running_loop().call_later(
            delay, lambda: spawn(self._token_expired()))

    async def _token_expired(self) -> None:
        error = Unauthenticated("token expired: reconnect with a fresh token")
        for operation in list(self.operations.values()):
            await self._finish(operation, [error])
            if operation.task is not None:
                operation.task.cancel()
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


"""graphql-transport-ws with roomEvents served by the room streams (rendered once per
group), and every other operation by strawberry; close codes as the protocol defines them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from graphql import FieldNode, GraphQLError
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from websockets.protocol import State

from graph_db.models import Role
from realtime.subscriber import Outbox, Send, Subscriber
from realtime.tasks import spawn
from resolvers import room_events
from resolvers.context import Context
from resolvers.errors import ServiceError
from transport.documents import ROOM_EVENTS_FIELD, Compiled
from transport.fanout import RenderSpec, frame_prefix

log = logging.getLogger(__name__)
RAW_SEND_KEY = "collab.raw_send"


class RawSendMiddleware:
    """Keeps the server's own ASGI `send` in the scope: the fan-out writes frames with it and
    asks the server's protocol whether the socket is backed up."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND_KEY] = send
        await self.app(scope, receive, send)


def writable_probe(send: Send) -> Callable[[], bool]:
    protocol = getattr(send, "__self__", None)
    writable = getattr(protocol, "writable", None)
    if isinstance(writable, asyncio.Event):
        return writable.is_set
    transport = getattr(protocol, "transport", None)
    if transport is not None and hasattr(transport, "get_write_buffer_size"):
        high = transport.get_write_buffer_limits()[1]
        return lambda: bool(transport.get_write_buffer_size() < high)
    return lambda: False  # unknown server: always go through the drain task


def direct_writer(send: Send) -> Callable[[bytes], bool] | None:
    """For uvicorn's websockets-sansio protocol: write finished frames to its transport.
    Only while the connection is open and without extensions (no per-message deflate), so
    the bytes are exactly what the protocol itself would have written."""
    protocol = getattr(send, "__self__", None)
    conn = getattr(protocol, "conn", None)
    transport = getattr(protocol, "transport", None)
    if type(protocol).__name__ != "WebSocketsSansIOProtocol" or conn is None:
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
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    return abort if callable(abort) else None


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    _outbox: Outbox | None = None

    def outbox(self) -> Outbox:
        if self._outbox is None:
            ws = self.websocket.ws  # type: ignore[attr-defined]
            send = ws.scope.get(RAW_SEND_KEY) or ws._send
            self._outbox = Outbox(send, writable_probe(send), abort_probe(send),
                                  direct_writer(send))
        return self._outbox

    async def shutdown(self) -> None:
        if self._outbox is not None:
            self._outbox.closed = True
        expiry = getattr(self.context, "expiry_timer", None)
        if expiry is not None:
            expiry.cancel()
        await super().shutdown()

    async def handle_message(self, message: Any) -> None:
        # strawberry catches only KeyError: a frame of another shape (a JSON array, a string
        # payload, a non-string query) would crash the connection (1006) instead of 4400.
        if not _well_formed(message):
            await self.handle_invalid_message("Failed to parse message")
            return
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        payload = message["payload"]
        compiled: Compiled = self.view.documents.get(  # type: ignore[attr-defined]
            payload["query"], payload.get("operationName"))
        if not compiled.room_events or not self.connection_acknowledged:
            await super().handle_subscribe(message)
            return
        if message["id"] in self.operations:
            await self.websocket.close(code=4409,
                                       reason=f"Subscriber for {message['id']} already exists")
            return
        operation = Operation(self, message["id"], payload["query"], payload.get("variables"),
                              payload.get("operationName"))
        operation.task = asyncio.create_task(self._room_events(operation, compiled))
        operation.task.add_done_callback(self._task_done)
        self.operations[message["id"]] = operation

    async def _room_events(self, operation: Operation[Context, None],
                           compiled: Compiled) -> None:
        hub = self.context.services.hub
        token = self.context.start_operation()  # loaders for the checks only, then released
        try:
            variables, start = await self._start(operation, compiled)
        except GraphQLError as error:
            await operation.send_initial_errors([error])
            return
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
        sub.on_end = lambda code, text: self._end(operation, code, text)
        stream = await hub.attach(sub, start.after_seq)
        try:
            if not await room_events.still_participant(self.context.db, sub.room_id,
                                                       sub.user_id):
                self._end(operation, "FORBIDDEN", "you are no longer a participant")
            await hub.serve(sub, stream)
        finally:
            await hub.detach(sub)

    async def _start(self, operation: Operation[Context, None], compiled: Compiled
                     ) -> tuple[dict[str, Any], room_events.StreamStart]:
        if compiled.errors:
            raise compiled.errors[0]
        assert compiled.operation is not None
        schema = self.view.documents.schema  # type: ignore[attr-defined]
        coerced = get_variable_values(schema, compiled.operation.variable_definitions or [],
                                      operation.variables or {})
        if isinstance(coerced, list):
            error = coerced[0]
            error.extensions = {"code": "BAD_USER_INPUT"}
            raise error
        field = next(s for s in compiled.operation.selection_set.selections
                     if isinstance(s, FieldNode) and s.name.value == ROOM_EVENTS_FIELD)
        field_def = schema.subscription_type.fields[ROOM_EVENTS_FIELD]
        args = get_argument_values(field_def, field, coerced)
        start = await room_events.authorize(self.context, str(args["roomId"]), args.get("after"))
        return operation.variables or {}, start

    def _group_key(self, variables: dict[str, Any], compiled: Compiled) -> tuple[Any, ...]:
        """Same document, same variables, same viewer-dependence: same frames. (The stream
        adds what the subscriber may see.)"""
        key = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS).decode()
        viewer = self.context.viewer.id if compiled.viewer_dependent else None
        return (id(compiled), key, viewer)

    def _end(self, operation: Operation[Context, None], code: str | None, text: str) -> None:
        async def finish() -> None:
            if code is None:
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            else:
                error = ServiceError(text)
                error.extensions = {"code": code}
                await operation.send_initial_errors([error])
            if operation.task is not None:
                operation.task.cancel()

        spawn(finish())


def _well_formed(message: Any) -> bool:
    """The shapes graphql-transport-ws defines (unknown types are rejected by strawberry)."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return False
    kind = message["type"]
    if kind in ("subscribe", "complete") and not isinstance(message.get("id"), str):
        return False
    if kind != "subscribe":
        return True
    payload = message.get("payload")
    return (isinstance(payload, dict) and isinstance(payload.get("query"), str)
            and isinstance(payload.get("variables") or {}, dict)
            and isinstance(payload.get("operationName") or "", str)
            and isinstance(payload.get("extensions") or {}, dict))

"""roomEvents over graphql-transport-ws, served by the room streams (rendered once per group).

A subscription runs a task only while it has something to await: its start (authorization,
attaching to the stream, replaying from a cursor) and any later replay after it fell behind.
Live, it is two small objects (its operation and its `Subscriber`) that the stream calls: an
idle socket holds no task, coroutine frames or event per subscription. Its `subscription.end`
is recorded once, however it ends, as the span around the former long-lived task did.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from typing import Any, cast

import orjson
from graphql import FieldNode, GraphQLError
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessagePayload

from graph_db.audit import Outcome
from graph_db.models import Role
from observability.operations import SocketRecord
from realtime.stream import RoomStream
from realtime.subscriber import Outbox, Subscriber
from realtime.tasks import spawn
from resolvers import audit, room_events
from resolvers.context import Context
from resolvers.errors import masked
from transport.documents import ROOM_EVENTS_FIELD, Compiled
from transport.fanout import RenderSpec, frame_prefix, frame_prefix_data, group_of
from transport.ws_messages import coded

log = logging.getLogger(__name__)

Op = Operation[Context, None]
# A room's stream in this process and its last processed seq (None: it had none).
Seen = tuple[RoomStream, int] | None


class RoomOperation(Operation[Context, None]):
    """A roomEvents operation; the owner of its subscriber (realtime.subscriber)."""

    __slots__ = ("code", "sub")

    def __init__(self, handler: RoomEventsHandler, id: str, query: str,
                 variables: dict[str, object] | None, operation_name: str | None) -> None:
        super().__init__(handler, id, query, variables, operation_name)
        self.sub: Subscriber | None = None  # attached to its stream, until released
        self.code: str | None = None  # why the stream ended it, if it did

    def ended(self, code: str | None, message: str) -> None:
        cast("RoomEventsHandler", self.handler).room_ended(self, code, message)

    def behind(self) -> None:
        cast("RoomEventsHandler", self.handler).room_behind(self)


class RoomEventsHandler(BaseGraphQLTransportWSHandler[Context, None]):
    _outbox: Outbox | None = None
    _record: SocketRecord | None = None  # once acknowledged: metrics and operation lines

    def outbox(self) -> Outbox:
        """The socket's outbox (transport/ws.py makes it)."""
        raise NotImplementedError

    def start_room_events(self, message_id: str, payload: SubscribeMessagePayload,
                          compiled: Compiled) -> None:
        operation = RoomOperation(self, message_id, payload["query"], payload.get("variables"),
                                  payload.get("operationName"))
        operation.task = asyncio.create_task(self._room_events(operation, compiled))
        operation.task.add_done_callback(self._task_done)
        self.operations[message_id] = operation

    async def _room_events(self, operation: RoomOperation, compiled: Compiled) -> None:
        """The operation's task until it is live. However it ends, the client is told, and
        its id is free for reuse."""
        await self._guarded(operation, self._follow(operation, compiled))

    async def _follow(self, operation: RoomOperation, compiled: Compiled) -> bool:
        """Starts the subscription; True once it is live."""
        hub = self.context.services.hub
        token = self.context.start_operation()  # loaders for the checks only, then released
        try:
            variables, start, seen = await self._start(operation, compiled)
        finally:
            self.context.end_operation(token)
        # The subscribe message is not needed any more; a subscription may live for hours.
        operation.query, operation.variables = "", None
        group = group_of(self._group_key(variables, compiled), variables)
        viewer = self.context.viewer
        sub = Subscriber(
            room_id=str(start.room.id), user_id=viewer.id, manager=start.manager,
            admin=viewer.role is Role.ADMIN, group_key=group.key,
            prefix=frame_prefix(operation.id), prefix_data=frame_prefix_data(operation.id),
            outbox=self.outbox(), spec=RenderSpec(compiled, group, self.context),
            owner=operation)
        try:
            stream = await hub.attach(sub, start.after_seq)
        except BaseException as exc:  # the subscription had started: its end is recorded
            self._audit_end(sub.room_id, operation.code, exc)
            raise
        operation.sub = sub
        # A removal that raced the subscribe is an event this process's stream processed
        # between the check and the attach (one it processes later ends the subscription
        # itself): only then is the membership read again.
        return await self._serve(operation, check=seen != (stream, stream.last_seq))

    async def _serve(self, operation: RoomOperation, *, check: bool = False) -> bool:
        """Replays what the subscriber missed until it is live; False when it ended meanwhile.
        `check`: first makes sure it is still a participant (a removal that raced the
        subscribe)."""
        sub = operation.sub
        assert sub is not None
        try:
            if check and not await room_events.still_participant(
                    self.context.db, sub.room_id, sub.user_id):
                operation.code = "FORBIDDEN"
                spawn(self._finish(operation, [coded("you are no longer a participant",
                                                     "FORBIDDEN")]))
                await self._release(operation, None)
                return False
            stream = self.context.services.hub.stream_of(sub.room_id)
            if stream is not None:
                await stream.catch_up(sub)
        except BaseException as exc:
            await self._release(operation, exc)
            raise
        if sub.outbox.closed:  # the socket is going: nothing more to send it
            await self._release(operation, None)
            return False
        return True

    def room_behind(self, operation: RoomOperation) -> None:
        """Its subscriber missed events: a task replays them (unless one already runs: it
        ends only once the subscriber is live)."""
        if operation.task is None and operation.sub is not None:
            operation.task = asyncio.create_task(self._catch_up(operation))
            operation.task.add_done_callback(self._task_done)

    async def _catch_up(self, operation: RoomOperation) -> None:
        await self._guarded(operation, self._serve(operation))

    async def _guarded(self, operation: RoomOperation, step: Coroutine[Any, Any, bool]
                       ) -> None:
        """Runs a task's step (start, or replay); however it ends, the client is told, and
        the operation is settled: kept without a task when live, else released."""
        live = False
        try:
            live = await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(operation, exc)
        finally:
            self._settled(operation, live)

    def _settled(self, operation: RoomOperation, live: bool) -> None:
        """The operation's task is done: live, the operation stays (without a task); else
        its id is free."""
        if live:
            operation.task = None
        else:
            self._forget(operation)

    async def _failed(self, operation: RoomOperation, exc: Exception) -> None:
        """Refused (not a participant, a bad cursor, ...) or broken: the client is told."""
        if isinstance(exc, GraphQLError):
            error = exc
        else:
            request_id = uuid.uuid4().hex[:16]
            error = masked(exc, request_id)
            log.error("roomEvents failed with %s [request %s, connection %s]",
                      error.code, request_id, self.context.request_id, exc_info=exc)
        self._settle(operation, [error])
        await self._finish(operation, [error])

    async def _start(self, operation: Op, compiled: Compiled
                     ) -> tuple[dict[str, Any], room_events.StreamStart, Seen]:
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
        room_id = str(args["roomId"])
        stream = self.context.services.hub.stream_of(room_id)
        seen = (stream, stream.last_seq) if stream is not None else None  # before the check
        start = await room_events.authorize(self.context, room_id, args.get("after"))
        if self._record is not None:  # its set-up is what a subscription's line times
            self._record.finish(operation.id)
        return operation.variables or {}, start, seen

    def _group_key(self, variables: dict[str, Any], compiled: Compiled) -> tuple[Any, ...]:
        """Same document, same variables, same viewer-dependence: same frames. (The stream
        adds what the subscriber may see.)"""
        key = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS).decode()
        viewer = self.context.viewer.id if compiled.viewer_dependent else None
        return (id(compiled), key, viewer)

    # -- ending subscriptions ----------------------------------------------------------------

    def room_ended(self, operation: RoomOperation, code: str | None, text: str) -> None:
        """The stream ended the subscription (removed from the room: FORBIDDEN; the room
        closed: None, a plain `complete`)."""
        operation.code = code
        spawn(self._finish(operation, None if code is None else [coded(text, code)]))
        self.stop_operation(operation)

    def stop_operation(self, operation: Op) -> None:
        """Ends a roomEvents operation: its task, if one runs, releases it when cancelled."""
        if operation.task is not None:
            operation.task.cancel()
        elif isinstance(operation, RoomOperation) and operation.sub is not None:
            spawn(self._release(operation, None))

    async def _release(self, operation: RoomOperation, exc: BaseException | None) -> None:
        """Out of its stream, and `subscription.end` in the trail: once, whoever gets here
        first. `exc`: what ended it, if anything was raised."""
        sub = operation.sub
        if sub is None:
            return
        operation.sub = None
        try:
            await self.context.services.hub.detach(sub)
        except BaseException as failure:
            exc = failure
            raise
        finally:
            self._audit_end(sub.room_id, operation.code, exc)

    def _audit_end(self, room_id: str, code: str | None, exc: BaseException | None) -> None:
        """The client's `complete`, a closed socket or a closed room end it as allowed; the
        stream's own end code (or a failure) as denied or failed."""
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            outcome, code = audit.outcome_of(exc)
        elif code is None:
            outcome = Outcome.ALLOWED
        else:
            outcome = Outcome.FAILED if code in audit.FAILED_CODES else Outcome.DENIED
        audit.subscription(self.context, "end", room_id, outcome, code)

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


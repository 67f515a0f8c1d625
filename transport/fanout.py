"""Renders a room event once per group of identical subscriptions: graphql-core executes the
subscription's selection against the event, orjson serializes it, and every subscriber of
the group gets the same text with its own operation id spliced in."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import ExecutionResult, GraphQLError, GraphQLSchema, execute
from graphql.pyutils import is_awaitable

from graph_db.messages import MessageRecord
from graph_db.models import UserRecord
from realtime.envelope import Envelope
from realtime.subscriber import Subscriber
from resolvers.context import Context
from resolvers.errors import masked
from schema.events import event_object
from transport.documents import Compiled

log = logging.getLogger("collaboration.fanout")


PREFIXES_KEPT = 256  # operation ids seen most ("1", "2", ...: one string for every socket)
SHARED_ID_MAX = 64
_groups: weakref.WeakValueDictionary[Hashable, Group] = weakref.WeakValueDictionary()


class Group:
    """What every subscription of one group has in common: its key and its variables. One
    object per group (however many sockets share it) for as long as a subscription holds
    it: thousands of sockets subscribing alike hold one copy, not thousands."""

    __slots__ = ("__weakref__", "key", "variables")

    def __init__(self, key: Hashable, variables: dict[str, Any]) -> None:
        self.key = key
        self.variables = variables


def group_of(key: Hashable, variables: dict[str, Any]) -> Group:
    """The live group of this key, or a new one (the key says the variables are equal)."""
    group = _groups.get(key)
    if group is None:
        group = _groups[key] = Group(key, variables)
    return group


@dataclass(frozen=True, slots=True)
class RenderSpec:
    compiled: Compiled
    group: Group
    context: Context

    @property
    def variables(self) -> dict[str, Any]:
        return self.group.variables


def frame_prefix(operation_id: str) -> str:
    if len(operation_id) <= SHARED_ID_MAX:
        return _shared_prefix(operation_id)
    return _prefix(operation_id)


def frame_prefix_data(operation_id: str) -> bytes:
    """frame_prefix, encoded (what the direct write path sends)."""
    if len(operation_id) <= SHARED_ID_MAX:
        return _shared_prefix_data(operation_id)
    return _prefix(operation_id).encode()


def _prefix(operation_id: str) -> str:
    return '{"id":' + orjson.dumps(operation_id).decode() + ',"type":"next","payload":'


# Only short ids are kept: a client's id can be as long as a message.
@functools.lru_cache(maxsize=PREFIXES_KEPT)
def _shared_prefix(operation_id: str) -> str:
    return _prefix(operation_id)


@functools.lru_cache(maxsize=PREFIXES_KEPT)
def _shared_prefix_data(operation_id: str) -> bytes:
    return _shared_prefix(operation_id).encode()


class GraphQLRenderer:
    def __init__(self, schema: GraphQLSchema,
                 hints: Mapping[tuple[str, int], tuple[object, ...]] | None = None) -> None:
        self.schema = schema
        self.hints = hints if hints is not None else {}

    async def render(self, sub: Subscriber, envelope: Envelope, cursor: str) -> str:
        spec: RenderSpec = sub.spec
        event = envelope.event
        root = event_object(event.room_id, event.type.value, event.at, cursor,
                            message_id=event.message_id, user_id=event.user_id,
                            request_id=event.request_id, data=envelope.data,
                            durable=envelope.durable)
        context = spec.context
        token = context.start_operation()  # fresh loaders for this event
        self._prime(context, self.hints.get((event.room_id, event.seq), ()))
        try:
            result = execute(self.schema, spec.compiled.document,  # type: ignore[arg-type]
                             root_value=root, context_value=context,
                             variable_values=spec.variables,
                             operation_name=_name(spec.compiled))
            if is_awaitable(result):
                result = await result
        finally:
            context.end_operation(token)
        return self._serialize(result, context)  # type: ignore[arg-type]

    @staticmethod
    def _prime(context: Context, hints: tuple[object, ...]) -> None:
        loaders = context.loaders
        for record in hints:
            if isinstance(record, MessageRecord):
                loaders.message.prime(record.id, record)
            elif isinstance(record, UserRecord):
                loaders.user.prime(record.id, record)

    @staticmethod
    def _serialize(result: ExecutionResult, context: Context) -> str:
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [_formatted(e, context) for e in result.errors]
        return orjson.dumps(body).decode()


def _name(compiled: Compiled) -> str | None:
    op = compiled.operation
    return op.name.value if op is not None and op.name is not None else None


def _formatted(error: GraphQLError, context: Context) -> dict[str, Any]:
    original = error.original_error
    if original is not None and not isinstance(original, GraphQLError):
        public = masked(original, context.request_id)
        log.error("%s rendering an event [request %s]", public.code,
                  context.request_id, exc_info=original)
        return {"message": public.message, "path": error.path,
                "extensions": public.extensions or {}}
    return dict(error.formatted)

"""Subscription documents parsed and validated once, not per subscribe or per event."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    parse,
    validate,
)
from graphql.language import Visitor, visit

CACHE_SIZE = 1_000
ROOM_EVENTS_FIELD = "roomEvents"
# Fields whose value depends on who asks: subscribers using them are rendered per viewer.
VIEWER_FIELDS = frozenset({"reactedByMe", "myMembership", "unreadCount", "joinRequests", "me"})


@dataclass(frozen=True, slots=True, eq=False)
class Compiled:
    document: DocumentNode | None
    operation: OperationDefinitionNode | None
    errors: list[GraphQLError]
    room_events: bool
    viewer_dependent: bool


class _FieldNames(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_field(self, node: FieldNode, *_: object) -> None:
        self.names.add(node.name.value)


class DocumentCache:
    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        self._cache: OrderedDict[tuple[str, str | None], Compiled] = OrderedDict()

    def get(self, query: str, operation_name: str | None) -> Compiled:
        key = (query, operation_name)
        found = self._cache.get(key)
        if found is None:
            found = self._compile(query, operation_name)
            self._cache[key] = found
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return found

    def _compile(self, query: str, operation_name: str | None) -> Compiled:
        try:
            document = parse(query)
        except GraphQLError as error:
            return Compiled(None, None, [error], False, False)
        operation = _operation(document, operation_name)
        room_events = (
            operation is not None and operation.operation is OperationType.SUBSCRIPTION
            and any(isinstance(s, FieldNode) and s.name.value == ROOM_EVENTS_FIELD
                    for s in operation.selection_set.selections))
        errors = validate(self.schema, document) if room_events else []
        names = _FieldNames()
        visit(document, names)
        return Compiled(document, operation, list(errors), room_events,
                        bool(names.names & VIEWER_FIELDS))


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)

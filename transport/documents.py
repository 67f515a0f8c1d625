"""Admission: every document is parsed, held to the operation limits and validated here, once
(cached), whichever way it came: HTTP GET or POST, a persisted-query hash, a WebSocket
subscribe (roomEvents, served by the room streams, or anything else, run by strawberry through
transport/admission.py). A cached document costs a dictionary lookup to admit again."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    specified_rules,
    validate,
)
from graphql.language import Visitor, visit
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from resolvers.extensions import with_code
from transport.limits import (
    LimitExceeded,
    OperationLimits,
    bound_validation_work,
    cost_error,
    limits_rule,
    parse_limited,
    weight,
)
from transport.measure import measure

CACHE_SIZE = 1_000
CACHE_CHARS = 16 * 1024 * 1024  # the documents' text together (tokens are bounded, strings not)
ROOM_EVENTS_FIELD = "roomEvents"
# Fields whose value depends on who asks: subscribers using them are rendered per viewer.
VIEWER_FIELDS = frozenset({"reactedByMe", "myMembership", "unreadCount", "joinRequests", "me"})
# What strawberry validates with by default (its own two rules after graphql-core's).
STRAWBERRY_RULES = (*specified_rules, MaybeNullValidationRule, OneOfInputValidationRule)

VariablesCheck = Callable[[Mapping[str, Any] | None], list[GraphQLError]]


@dataclass(frozen=True, slots=True)
class Admission:
    """How documents are admitted (settings decide)."""

    limits: OperationLimits = field(default_factory=OperationLimits)
    introspection: bool = True
    suggestions: bool = True  # graphql-core's "Did you mean ...?" in messages


@dataclass(frozen=True, slots=True, eq=False)
class Compiled:
    document: DocumentNode | None  # None: it does not parse (see errors)
    operation: OperationDefinitionNode | None  # None: no operation by that name
    errors: list[GraphQLError]  # parse, limits or validation; coded
    room_events: bool = False
    viewer_dependent: bool = False
    weight: int = 1  # of its caller's rate budget (transport/limits.py WEIGHTS)
    # Set when the cost is over the budget only with the largest pages its variables may ask
    # for: checked again with each request's variables.
    variables_check: VariablesCheck | None = None

    def refusal(self, variables: Mapping[str, Any] | None) -> list[GraphQLError]:
        """Why this document may not run with these variables: [] when it may."""
        if self.errors or self.variables_check is None:
            return self.errors
        return self.variables_check(variables)

    @property
    def syntax_error(self) -> bool:
        """It does not parse, for another reason than a limit (WebSocket: close 4400)."""
        return self.document is None and not isinstance(self.errors[0], LimitExceeded)


class _FieldNames(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_field(self, node: FieldNode, *_: object) -> None:
        self.names.add(node.name.value)


class IntrospectionDisabled(NoSchemaIntrospectionCustomRule):
    """`__schema` and `__type` refused with a code of their own (`__typename` and
    federation's `_service { sdl }` are not introspection and stay available)."""

    def report_error(self, error: GraphQLError) -> None:
        error.extensions = {"code": "INTROSPECTION_DISABLED"}
        super().report_error(error)


class DocumentCache:
    def __init__(self, schema: GraphQLSchema, admission: Admission | None = None) -> None:
        self.schema = schema
        self.admission = admission or Admission()
        self.limits = self.admission.limits
        self._limits_rule = limits_rule(self.limits)
        rules: tuple[type[ASTValidationRule], ...] = STRAWBERRY_RULES
        self._rules = rules if self.admission.introspection else (*rules,
                                                                  IntrospectionDisabled)
        self._cache: OrderedDict[tuple[str, str | None], Compiled] = OrderedDict()
        self._chars = 0
        bound_validation_work()

    def get(self, query: str, operation_name: str | None) -> Compiled:
        key = (query, operation_name)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        found = self._compile(query, operation_name)
        self._cache[key] = found
        self._chars += len(query)
        while len(self._cache) > CACHE_SIZE or (self._chars > CACHE_CHARS
                                                and len(self._cache) > 1):
            (old, _), _ = self._cache.popitem(last=False)
            self._chars -= len(old)
        return found

    def _compile(self, query: str, operation_name: str | None) -> Compiled:
        try:
            document = parse_limited(query, self.limits)
        except GraphQLError as error:
            return Compiled(None, None, [self._coded(error)])
        operation = _operation(document, operation_name)
        errors = validate(self.schema, document, [self._limits_rule])
        if not errors:  # the full validation only within the limits (it is the costly part)
            errors = validate(self.schema, document, self._rules,
                              hide_suggestions=not self.admission.suggestions)
        names = _FieldNames()
        visit(document, names)
        compiled = Compiled(document, operation, [self._coded(e) for e in errors],
                            room_events=_is_room_events(operation),
                            viewer_dependent=bool(names.names & VIEWER_FIELDS))
        if errors or operation is None:
            return compiled
        found = measure(self.schema, document, operation, None)
        check = None
        if found.variable_sized and found.cost > self.limits.max_cost:
            check = partial(self._cost_with, document, operation)
        return replace(compiled, weight=weight(found), variables_check=check)

    def _cost_with(self, document: DocumentNode, operation: OperationDefinitionNode,
                   variables: Mapping[str, Any] | None) -> list[GraphQLError]:
        cost = measure(self.schema, document, operation, variables or {}).cost
        return [cost_error(cost, self.limits)] if cost > self.limits.max_cost else []

    def _coded(self, error: GraphQLError) -> GraphQLError:
        return with_code(error, suggestions=self.admission.suggestions)


def _is_room_events(operation: OperationDefinitionNode | None) -> bool:
    return (operation is not None and operation.operation is OperationType.SUBSCRIPTION
            and any(isinstance(s, FieldNode) and s.name.value == ROOM_EVENTS_FIELD
                    for s in operation.selection_set.selections))


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)

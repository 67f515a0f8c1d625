"""The shape of one operation: how deep it nests, how many aliases and directives it has, its
estimated cost and its root fields, counted through fragments (each fragment is measured once
and counted at every spread, so the walk is linear in the document while the counts are what
execution would face).

Cost: an object field 2, a scalar field 1; a list field multiplies what it contains by its
`first`/`last` (their default when not given; a connection's `edges` by the connection's), by
ASSUMED_LIST_SIZE when it has neither. Introspection (`__schema`, `__type`) is left out:
graphql-core bounds its depth itself, and it is off in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_list_type,
)

from resolvers.pagination import MAX_PAGE

OBJECT_COST = 2
SCALAR_COST = 1
# Lists without first/last (participants, reactions, mentions, edits, _entities) count once:
# their length is bounded by the data (a room's maxParticipants), not by what the query asks.
ASSUMED_LIST_SIZE = 1
SLICING = ("first", "last")
SIZED_BY_CONNECTION = frozenset({"edges", "nodes"})
INTROSPECTION = frozenset({"__schema", "__type"})
# Selection sets and fragments nested in each other: far past any real document, and low
# enough that the walk never nears Python's recursion limit.
MAX_NESTING = 100


@dataclass(slots=True)
class Measured:
    depth: int = 0
    aliases: int = 0
    directives: int = 0
    cost: int = 0
    # A first/last came from a variable: the cost above assumed the largest page (MAX_PAGE);
    # with the request's variables it may be less.
    variable_sized: bool = False
    root_fields: list[str] = field(default_factory=list)

    def add(self, other: Measured) -> None:
        self.depth = max(self.depth, other.depth)
        self.aliases += other.aliases
        self.directives += other.directives
        self.cost += other.cost
        self.variable_sized = self.variable_sized or other.variable_sized


class _TooDeep(Exception):
    pass


def measure(schema: GraphQLSchema, document: DocumentNode,
            operation: OperationDefinitionNode,
            variables: Mapping[str, Any] | None) -> Measured:
    """`variables` None: before any request (a variable page size counts as MAX_PAGE)."""
    walker = _Walker(schema, document, operation, variables)
    root = schema.get_root_type(operation.operation)
    try:
        found = walker.selection_set(operation.selection_set, root, None, 0)
    except _TooDeep:
        found = Measured(depth=MAX_NESTING + 1)
    found.directives += len(operation.directives or ()) + sum(
        len(v.directives or ()) for v in operation.variable_definitions or ())
    found.root_fields = list(walker.root_fields(operation.selection_set, frozenset(),
                                                {}).values())
    return found


class _Walker:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode,
                 operation: OperationDefinitionNode,
                 variables: Mapping[str, Any] | None) -> None:
        self.schema = schema
        self.fragments = {d.name.value: d for d in document.definitions
                          if isinstance(d, FragmentDefinitionNode)}
        self.variables = variables
        self.defaults = {v.variable.name.value: v.default_value
                         for v in operation.variable_definitions or ()}
        self.memo: dict[tuple[str, int | None], Measured] = {}
        self.visiting: set[str] = set()

    def selection_set(self, node: SelectionSetNode, parent: GraphQLNamedType | None,
                      size: int | None, nesting: int) -> Measured:
        """`size`: the page size of the connection this selection set is in (for `edges`)."""
        if nesting > MAX_NESTING:
            raise _TooDeep
        total = Measured()
        for selection in node.selections:
            total.directives += len(selection.directives or ())
            if isinstance(selection, FieldNode):
                total.add(self.field(selection, parent, size, nesting))
            elif isinstance(selection, InlineFragmentNode):
                condition = (self.schema.get_type(selection.type_condition.name.value)
                             if selection.type_condition else parent)
                total.add(self.selection_set(selection.selection_set, condition, size,
                                             nesting + 1))
            elif isinstance(selection, FragmentSpreadNode):
                total.add(self.spread(selection, size, nesting))
        return total

    def field(self, node: FieldNode, parent: GraphQLNamedType | None, size: int | None,
              nesting: int) -> Measured:
        found = Measured(depth=1, aliases=1 if node.alias else 0)
        name = node.name.value
        definition = _field(parent, name)
        if name in INTROSPECTION or definition is None:
            found.cost = SCALAR_COST if name == "__typename" else 0
            found.depth = 0 if name in INTROSPECTION else 1
            return found  # unknown fields are the validation's business
        named = get_named_type(definition.type)
        is_list = is_list_type(get_nullable_type(definition.type))
        page, found.variable_sized = self.page_size(node, definition)
        own = OBJECT_COST if is_composite_type(named) else SCALAR_COST
        inner = Measured()
        if node.selection_set is not None and is_composite_type(named):
            inner = self.selection_set(node.selection_set, named, None if is_list else page,
                                       nesting + 1)
        cost = own + inner.cost
        if is_list:
            inherited = size if name in SIZED_BY_CONNECTION else None
            cost *= next((s for s in (page, inherited) if s is not None), ASSUMED_LIST_SIZE)
        inner.depth, inner.cost = inner.depth + 1, cost
        inner.aliases += found.aliases
        inner.variable_sized = inner.variable_sized or found.variable_sized
        return inner

    def spread(self, node: FragmentSpreadNode, size: int | None, nesting: int) -> Measured:
        name = node.name.value
        fragment = self.fragments.get(name)
        if fragment is None or name in self.visiting:
            return Measured()  # unknown fragments and cycles: the validation reports them
        key = (name, size)
        found = self.memo.get(key)
        if found is None:
            self.visiting.add(name)
            try:
                condition = self.schema.get_type(fragment.type_condition.name.value)
                found = self.selection_set(fragment.selection_set, condition, size, nesting + 1)
            finally:
                self.visiting.discard(name)
            found.directives += len(fragment.directives or ())
            self.memo[key] = found
        return found

    def page_size(self, node: FieldNode, definition: GraphQLField) -> tuple[int | None, bool]:
        """The field's first/last (the larger if both), and whether a variable gave it."""
        given = {a.name.value: a.value for a in node.arguments or ()}
        sizes: list[int] = []
        from_variable = False
        for name in SLICING:
            argument = definition.args.get(name)
            if argument is None:
                continue
            value = given.get(name)
            from_variable = from_variable or isinstance(value, VariableNode)
            sizes.append(min(max(self.value(value, argument), 0), MAX_PAGE))
        return (max(sizes) if sizes else None), from_variable

    def value(self, node: ValueNode | None, argument: GraphQLArgument) -> int:
        if isinstance(node, VariableNode):
            if self.variables is None:
                return MAX_PAGE  # any page a request may ask for
            given = self.variables.get(node.name.value)
            if given is None:
                node = self.defaults.get(node.name.value)
                return self.value(None if isinstance(node, VariableNode) else node, argument)
            return given if isinstance(given, int) and not isinstance(given, bool) else MAX_PAGE
        if isinstance(node, IntValueNode):
            return int(node.value)
        if node is None or isinstance(node, NullValueNode):
            default = argument.default_value  # Undefined when it has none
            return default if isinstance(default, int) else MAX_PAGE
        return MAX_PAGE  # not an Int: the validation rejects it

    def root_fields(self, node: SelectionSetNode, seen: frozenset[str],
                    into: dict[str, str]) -> dict[str, str]:
        """Response key -> field name: fields of the same key merge (they run once)."""
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                key = (selection.alias or selection.name).value
                into.setdefault(key, selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                self.root_fields(selection.selection_set, seen, into)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None and fragment.name.value not in seen:
                    self.root_fields(fragment.selection_set, seen | {fragment.name.value},
                                     into)
        return into


def _field(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = parent.fields.get(name)
        return found
    return None

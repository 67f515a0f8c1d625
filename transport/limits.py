"""Operation limits: what a document may ask for before anything of it runs.

Anchored on graphql-armor's defaults: depth, aliases, directives, tokens and a cost budget.
Tokens are bounded by the parser itself (a 1 MB document fails after its first 2,000 tokens);
the others are one graphql-core validation rule (`limits_rule`), counted through fragments
(each spread counts what its fragment contains: an alias limit that skips fragments is
bypassed by moving the aliases into one). transport/documents.py applies both, once per
document, on every path (HTTP GET/POST, persisted hashes, every WebSocket subscribe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    ValidationContext,
    parse,
)
from graphql.validation.rules import overlapping_fields_can_be_merged as _overlap

from resolvers.errors import ServiceError
from transport.measure import Measured, measure

# graphql-core's messages for its own token and comment limits (the only way it tells them
# from other syntax errors); tests/test_operation_limits.py fails if they change.
_PARSER_LIMIT = re.compile(r"Document contains more than \d+ (tokens|comments)\b")

# Comparing fields of one response name is quadratic: `{ me { id } me { id } ... }` 400
# times (2,000 tokens) spends 399,000 units of graphql-core's validation budget (default
# 500,000), over a second of CPU. The clients' documents spend under 10; past this the
# validation stops ("Validation aborted.", GRAPHQL_VALIDATION_FAILED) within tens of ms.
VALIDATION_WORK = 10_000

# Rate-limit weights of root fields (operations weigh 1 otherwise): the expensive mutations.
WEIGHTS: dict[str, int] = {
    "sendMessage": 3,  # a write under the room's lock, mentions, a fan-out to every follower
}


@dataclass(frozen=True, slots=True)
class OperationLimits:
    max_depth: int = 10
    max_aliases: int = 15
    max_directives: int = 50
    max_tokens: int = 2_000
    max_cost: int = 5_000


class LimitExceeded(ServiceError):
    """A document over one of the limits: rejected before anything of it runs."""


class DepthLimitExceeded(LimitExceeded):
    code = "DEPTH_LIMIT_EXCEEDED"


class AliasLimitExceeded(LimitExceeded):
    code = "ALIAS_LIMIT_EXCEEDED"


class DirectiveLimitExceeded(LimitExceeded):
    code = "DIRECTIVE_LIMIT_EXCEEDED"


class TokenLimitExceeded(LimitExceeded):
    code = "TOKEN_LIMIT_EXCEEDED"


class CostLimitExceeded(LimitExceeded):
    code = "COST_LIMIT_EXCEEDED"


def bound_validation_work(units: int = VALIDATION_WORK) -> None:
    """graphql-core reads this module global at each validation (process-wide; the
    documented way to change it). tests/test_operation_limits.py fails if it goes."""
    if not isinstance(getattr(_overlap, "MAX_COMPLEXITY_BUDGET", None), int):
        raise RuntimeError("graphql-core no longer has MAX_COMPLEXITY_BUDGET: bound the "
                           "overlapping-fields validation another way (transport/limits.py)")
    _overlap.MAX_COMPLEXITY_BUDGET = units


def parse_limited(query: str, limits: OperationLimits) -> DocumentNode:
    """Parses at most `max_tokens` tokens (and as many comments): TokenLimitExceeded past
    them, GraphQLSyntaxError for any other syntax error."""
    try:
        return parse(query, max_lexical_tokens=limits.max_tokens,
                     max_comments=limits.max_tokens)
    except GraphQLSyntaxError as error:
        found = _PARSER_LIMIT.search(error.message)
        if found is None:
            raise
        raise TokenLimitExceeded(
            f"the document has more than {limits.max_tokens} {found.group(1)}; "
            f"at most {limits.max_tokens} are allowed", maxTokens=limits.max_tokens) from None


def cost_error(cost: int, limits: OperationLimits) -> CostLimitExceeded:
    return CostLimitExceeded(
        f"the operation's estimated cost is {cost}; at most {limits.max_cost} is allowed "
        "(ask for fewer fields, or smaller pages with first/last)",
        cost=cost, maxCost=limits.max_cost)


def violations(found: Measured, limits: OperationLimits) -> list[LimitExceeded]:
    """Every limit the operation goes over (the cost only as far as it is known without
    variables: see Measured.variable_sized)."""
    errors: list[LimitExceeded] = []
    if found.depth > limits.max_depth:
        errors.append(DepthLimitExceeded(
            f"the operation is nested {found.depth} levels deep; at most {limits.max_depth} "
            "are allowed", depth=found.depth, maxDepth=limits.max_depth))
    if found.aliases > limits.max_aliases:
        errors.append(AliasLimitExceeded(
            f"the operation has {found.aliases} aliases (fragments included); at most "
            f"{limits.max_aliases} are allowed", aliases=found.aliases,
            maxAliases=limits.max_aliases))
    if found.directives > limits.max_directives:
        errors.append(DirectiveLimitExceeded(
            f"the operation has {found.directives} directives (fragments included); at most "
            f"{limits.max_directives} are allowed", directives=found.directives,
            maxDirectives=limits.max_directives))
    if found.cost > limits.max_cost and not found.variable_sized:
        errors.append(cost_error(found.cost, limits))
    return errors


def weight(found: Measured) -> int:
    """What the operation costs of its caller's rate budget."""
    return max(1, sum(WEIGHTS.get(name, 0) for name in found.root_fields))


def limits_rule(limits: OperationLimits) -> type[ASTValidationRule]:
    """The limits as a graphql-core validation rule (validate(schema, document, [rule]))."""

    class OperationLimitsRule(ASTValidationRule):
        context: ValidationContext

        def enter_operation_definition(self, node: OperationDefinitionNode,
                                       *_: object) -> None:
            found = measure(self.context.schema, self.context.document, node, None)
            for error in violations(found, limits):
                self.report_error(error)

    return OperationLimitsRule


class SubscriptionLimitExceeded(LimitExceeded):
    """WS_MAX_SUBSCRIPTIONS operations already run on this socket."""

    code = "SUBSCRIPTION_LIMIT_EXCEEDED"

    def __init__(self, limit: int) -> None:
        super().__init__(f"this connection already runs {limit} operations, the most it may: "
                         "complete one first, or open another connection",
                         maxSubscriptions=limit)

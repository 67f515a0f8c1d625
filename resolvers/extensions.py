"""Schema extensions: per-operation loaders, and errors that always carry a code."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from resolvers.context import Context
from resolvers.errors import masked

log = logging.getLogger("collaboration.errors")

# graphql-core's messages for values that do not fit their declared type.
_INPUT_MARKERS = ("got invalid value", "Expected value of type", "does not exist in",
                  "cannot represent", "Expected type", "of required type", "was not provided",
                  # graphql-core 3.3: "Variable '$id' has invalid value: Expected a value of
                  # non-null type 'ID!' to be provided."
                  "has invalid value", "to be provided")
# graphql-core's hints ("Did you mean 'me'?", "Did you mean the enum value 'DOCTOR'?"):
# outside development they would let anyone map the schema with introspection turned off.
_SUGGESTION = re.compile(r"\s*Did you mean\b[^?]*\?")


class OperationLoaders(SchemaExtension):
    """Fresh DataLoaders for every operation, also on a long-lived WebSocket connection."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        token = context.start_operation() if isinstance(context, Context) else None
        try:
            yield
        finally:
            if token is not None:
                Context.end_operation(token)


def _unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def without_suggestions(message: str) -> str:
    return _SUGGESTION.sub("", message)


def with_code(error: GraphQLError, *, suggestions: bool = True) -> GraphQLError:
    """The error with an `extensions.code` (and, unless `suggestions`, no "Did you mean")."""
    if not suggestions:
        error.message = without_suggestions(error.message)
    if not (error.extensions and "code" in error.extensions):
        error.extensions = {**(error.extensions or {}), "code": _code_for(error)}
    return error


class CodedErrors(MaskErrors):
    """Masks unexpected failures as "Unexpected error." (logged with a request id) and gives
    every error an `extensions.code`, also parse and validation errors; outside development
    without graphql-core's suggestions (variables that do not fit their type)."""

    def __init__(self, *, suggestions: bool = True) -> None:
        super().__init__(should_mask_error=_unexpected)
        self.suggestions = suggestions

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [self._coded(e) for e in errors]

    def _request_id(self) -> str:
        context = self.execution_context.context
        return context.request_id if isinstance(context, Context) else "-"

    def _coded(self, error: GraphQLError) -> GraphQLError:
        return coded(error, self._request_id(), suggestions=self.suggestions)


def coded(error: GraphQLError, request_id: str, *, suggestions: bool) -> GraphQLError:
    """An error as the caller sees it: an unexpected failure masked as "Unexpected error."
    (logged with the request id), anything else with its code (CodedErrors; the HTTP
    executor, transport/executor.py, calls this directly)."""
    original = error.original_error
    if original is not None and not isinstance(original, GraphQLError):
        public = masked(original, request_id)
        log.error("%s [request %s] at %s", public.code, request_id,
                  error.path, exc_info=original)
        anonymous = GraphQLError(public.message, nodes=error.nodes, source=error.source,
                                 positions=error.positions, path=error.path,
                                 extensions=public.extensions)
        return anonymous
    return with_code(error, suggestions=suggestions)


def _code_for(error: GraphQLError) -> str:
    message = error.message
    if message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if any(marker in message for marker in _INPUT_MARKERS):
        return "BAD_USER_INPUT"
    if error.original_error is None and error.path is None:
        return "GRAPHQL_VALIDATION_FAILED"
    return "BAD_REQUEST"

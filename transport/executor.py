"""Runs an admitted document on graphql-core, as the room streams already do for events.

strawberry's Schema.execute costs ~0.3 ms of Python per operation before a resolver runs: a
fresh execution context and extension instances, their hooks entered and left, a middleware
manager, the document looked up again. Every document here was parsed, held to the limits
and validated once by the DocumentCache (transport/documents.py), so an operation needs only
what those extensions did for it, done here directly:

- fresh loaders for the operation (OperationLoaders);
- every error coded, unexpected failures masked and logged with the request id (CodedErrors);
- resolvers, field extensions (the audit trail) and strawberry's Info as strawberry runs
  them: the schema is strawberry's, executed with its own execution context class.

Schema extensions that wrap execution (OpenTelemetry spans) need strawberry's path: the
endpoint uses this executor only when none is configured (app.py).
"""

from __future__ import annotations

from typing import Any

from graphql import ExecutionResult, GraphQLError, execute
from graphql.pyutils import is_awaitable
from strawberry import Schema

from resolvers.context import Context
from resolvers.extensions import coded
from transport.documents import Compiled


class DirectExecutor:
    def __init__(self, schema: Schema, *, suggestions: bool) -> None:
        self.graphql_schema = schema._schema
        # strawberry's own (the Info its resolvers get is built by it).
        self.executor_class = schema.execution_context_class
        self.suggestions = suggestions

    async def execute(self, compiled: Compiled, variables: dict[str, Any] | None,
                      context: Context) -> ExecutionResult:
        assert compiled.document is not None and compiled.operation is not None
        operation = compiled.operation
        token = context.start_operation()
        try:
            result = execute(
                self.graphql_schema, compiled.document, context_value=context,
                variable_values=variables,
                operation_name=operation.name.value if operation.name else None,
                executor_class=self.executor_class, hide_suggestions=not self.suggestions)
            if is_awaitable(result):
                result = await result
        except Exception as exc:
            error = GraphQLError(str(exc), original_error=exc)
            result = ExecutionResult(None, [error])
        finally:
            Context.end_operation(token)
        assert isinstance(result, ExecutionResult)
        if result.errors:
            request_id = context.request_id
            result.errors = [coded(e, request_id, suggestions=self.suggestions)
                             for e in result.errors]
        return result

"""GraphQL over HTTP at /graphql, to the letter of the spec (graphql-http's audit passes whole):

- GET runs queries (parameters in the URL); a mutation over GET is 405 with `Allow: POST`, so
  GET stays free of side effects (CSRF-safe); POST takes application/json bodies, and
  multipart/form-data ones with files when uploads are on (transport/uploads.py: CSRF guard,
  streamed to temporary files that are deleted once the request is answered).
- `Accept` picks the answer's media type. application/json: 200 for every well-formed request,
  errors in the body. application/graphql-response+json: 400 without a `data` entry when the
  document does not parse, validate or take its variables; 200 once execution started.
  A browser page load (text/html preferred) gets GraphiQL where it is enabled.
- Malformed requests (not JSON, wrong parameter types, no document) are 4xx with BAD_REQUEST.
- Subscriptions are served over the WebSocket; over HTTP they get a BAD_REQUEST saying so.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, OperationType
from graphql import ExecutionResult as GraphQLExecutionResult
from starlette.requests import Request
from starlette.responses import Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.base import BaseSchema
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType as StrawberryOperation

from auth import AuthError, Claims
from observability.operations import OperationRecord, request_id_from
from resolvers.context import Context, Viewer
from resolvers.errors import ServiceError
from transport.documents import Compiled, DocumentCache
from transport.errors import (
    BadRequest,
    HTTPProblem,
    OperationResolutionFailure,
    PersistedQueryNotFound,
    RequestTimeout,
)
from transport.executor import DirectExecutor
from transport.http_params import GraphQLParams, read_params
from transport.ide import GraphiQL
from transport.media import GRAPHQL_RESPONSE_JSON, HTML, JSON, negotiate
from transport.persisted import PersistedOperations, Resolved
from transport.rate_limit import RateLimited, RateLimiter
from transport.uploads import UploadLimits, discard

SUBSCRIPTION_OVER_HTTP = ("subscriptions are served over WebSocket (graphql-transport-ws) "
                          "at /graphql")
# Codes of errors raised before execution starts (GraphQL over HTTP's "request errors").
REQUEST_ERROR_CODES = frozenset({
    "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT", "BAD_REQUEST",
    "INTROSPECTION_DISABLED", "DEPTH_LIMIT_EXCEEDED", "ALIAS_LIMIT_EXCEEDED",
    "DIRECTIVE_LIMIT_EXCEEDED", "TOKEN_LIMIT_EXCEEDED", "COST_LIMIT_EXCEEDED"})
GRAPHQL_MEDIA = (GRAPHQL_RESPONSE_JSON, JSON)
# A browser's page load prefers text/html to both (a wildcard or lower quality for JSON).
PAGE_MEDIA = (*GRAPHQL_MEDIA, HTML)
ALLOWED = {"GET": frozenset({StrawberryOperation.QUERY}),
           "POST": frozenset({StrawberryOperation.QUERY, StrawberryOperation.MUTATION})}
# strawberry's result, or graphql-core's (transport/executor.py): both have data, errors and
# extensions.
Result = ExecutionResult | GraphQLExecutionResult
# A "not found" must never be cached: the client registers the document right after.
NO_CACHE = {"cache-control": "private, no-cache, must-revalidate"}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request, as far as is known before anything runs (no database yet)."""

    key: str  # whose rate budget it takes from: "user:<sub>", or "ip:<address>"
    auth: Claims | AuthError | None


class Gate(Protocol):
    """What the endpoint provides: the caller of a request, then its context."""

    async def caller(self, request: Request) -> Caller: ...
    async def context(self, request: Request, caller: Caller) -> Context: ...


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    max_bytes: int  # request bodies (413 past it)
    timeout: float  # seconds an operation may run (then REQUEST_TIMEOUT, 504)
    uploads: UploadLimits | None = None  # None: no multipart requests (415)


class GraphQLHTTP:
    def __init__(self, schema: BaseSchema, documents: DocumentCache,
                 persisted: PersistedOperations, gate: Gate, rate: RateLimiter,
                 limits: HTTPLimits, ide: GraphiQL | None,
                 direct: DirectExecutor | None = None) -> None:
        self.schema = schema
        self.direct = direct  # None: strawberry runs operations (span extensions need it)
        self.documents = documents
        self.persisted = persisted
        self.gate = gate
        self.rate = rate
        self.limits = limits
        self.ide = ide

    async def __call__(self, request: Request) -> Response:
        accept = request.headers.get("accept")
        media = negotiate(accept, GRAPHQL_MEDIA)
        try:
            if request.method not in ALLOWED:
                raise HTTPProblem(405, "use GET or POST", headers={"allow": "GET, POST"})
            if request.method == "GET" and negotiate(accept, PAGE_MEDIA) == HTML:
                if self.ide is not None:
                    return self.ide.page()
                if media is None:  # a page this service does not serve (production)
                    raise HTTPProblem(404, "no page here: GraphQL requests accept "
                                           f"{GRAPHQL_RESPONSE_JSON} or {JSON}")
            if media is None:
                raise HTTPProblem(406, f"accept {GRAPHQL_RESPONSE_JSON} or {JSON}")
            return await self._operation(request, media)
        except HTTPProblem as problem:
            body = {"errors": [problem.error.formatted]}
            return _json(body, problem.status, media or JSON, problem.headers)

    async def _operation(self, request: Request, media: str) -> Response:
        """One GraphQL request, counted, timed and logged (observability/operations.py)."""
        op = OperationRecord("http", request_id_from(request.headers.get("x-request-id")))
        op.bind()
        params: GraphQLParams | None = None
        try:
            params = await read_params(request, self.limits.max_bytes, self.limits.uploads)
            op.operation(None, params.operation_name)
            response = await self._graphql(request, media, params, op)
        except HTTPProblem as problem:  # refused, or (504) stopped while it ran
            op.errors([problem.error])
            op.status = problem.status
            raise
        except Exception:
            op.failed()
            raise
        else:
            op.status = response.status_code
        finally:
            if params is not None:  # the resolvers are done with the uploads
                discard(params.uploads)
            op.finish()
        return response

    async def _graphql(self, request: Request, media: str, params: GraphQLParams,
                       op: OperationRecord) -> Response:
        try:
            resolved = await self.persisted.resolve(params.query, params.extensions)
        except BadRequest as error:
            raise HTTPProblem(400, error.message) from None
        except PersistedQueryNotFound as error:
            op.refused([error])
            return _json(_body(None, [error], media, request_error=True), 200, media, NO_CACHE)
        except ServiceError as error:
            op.refused([error])
            return self._request_error([error], media)
        if resolved.query is None:
            raise HTTPProblem(400, "no GraphQL document: send `query`, or a persisted-query "
                                   "hash in `extensions`")
        caller = await self.gate.caller(request)
        if isinstance(caller.auth, Claims):
            op.user_id = caller.auth.user_id
            op.bind()
        _raise_refused(self.rate.refused(caller.key))  # a flood is not even parsed
        compiled = self.documents.get(resolved.query, params.operation_name)
        op.operation(compiled.operation, params.operation_name)
        refusal = self._refusal(request.method, compiled, params)
        # Every request takes from its caller's budget, refused documents too (1).
        await self._charge(caller, 1 if refusal else compiled.weight)
        if refusal:
            op.refused(refusal)
            return self._request_error(refusal, media)
        context = await self.gate.context(request, caller)
        context.request_id = op.request_id  # one id in the log line and in any error
        op.executed = True
        result = await self._execute(request.method, resolved.query, compiled, params,
                                     context)
        request_error = _is_request_error(result)
        if request_error:  # bad variables: nothing ran
            op.refused(result.errors or [])
        else:
            op.errors(result.errors or [])
        if not request_error:
            await self._register(resolved, context)
        status = 400 if request_error and media == GRAPHQL_RESPONSE_JSON else 200
        body = _body(result.data, result.errors or [], media, request_error=request_error,
                     extensions=result.extensions)
        return _json(body, status, media)

    async def _charge(self, caller: Caller, weight: int) -> None:
        try:
            await self.rate.charge(caller.key, weight)
        except RateLimited as refused:
            _raise_refused(refused)

    @staticmethod
    def _refusal(method: str, compiled: Compiled, params: GraphQLParams
                 ) -> list[GraphQLError]:
        """Why the document does not run here (before anything of it runs): it does not
        parse, is over a limit or does not validate, names no operation, or its operation
        type is not served over this method."""
        if compiled.document is None:
            return compiled.errors
        operation = compiled.operation
        if operation is None:
            return [OperationResolutionFailure(_unresolved(compiled.document,
                                                           params.operation_name))]
        if operation.operation is OperationType.SUBSCRIPTION:
            return [BadRequest(SUBSCRIPTION_OVER_HTTP)]
        if operation.operation is OperationType.MUTATION and method == "GET":
            raise HTTPProblem(405, "mutations are not run over GET: use POST",
                              headers={"allow": "POST"})
        return compiled.refusal(params.variables)

    async def _execute(self, method: str, query: str, compiled: Compiled,
                       params: GraphQLParams, context: Context) -> Result:
        try:
            async with asyncio.timeout(self.limits.timeout) as deadline:
                if self.direct is not None:
                    return await self.direct.execute(compiled, params.variables, context)
                return await self.schema.execute(
                    query, variable_values=params.variables, context_value=context,
                    operation_name=params.operation_name,
                    allowed_operation_types=ALLOWED[method],
                    operation_extensions=params.extensions)
        except (MissingQueryError, CannotGetOperationTypeError,
                InvalidOperationTypeError) as exc:  # ruled out by _refusal; kept as a 4xx
            raise HTTPProblem(400, "this operation cannot run here") from exc
        except TimeoutError:
            if not deadline.expired():
                raise
            raise HTTPProblem(504, error=RequestTimeout(self.limits.timeout)) from None

    async def _register(self, resolved: Resolved, context: Context) -> None:
        # Only signed-in callers add documents, so anonymous traffic cannot churn the cache.
        if resolved.register and resolved.query and isinstance(context.auth, Viewer):
            await self.persisted.register(resolved.register, resolved.query)

    @staticmethod
    def _request_error(errors: list[GraphQLError], media: str) -> Response:
        status = 400 if media == GRAPHQL_RESPONSE_JSON else 200
        return _json(_body(None, errors, media, request_error=True), status, media)


def _raise_refused(refused: RateLimited | None) -> None:
    if refused is not None:
        raise HTTPProblem(429, headers={"retry-after": str(refused.retry_after)},
                          error=refused)


def _unresolved(document: DocumentNode, operation_name: str | None) -> str:
    if operation_name:
        return f"Unknown operation named '{operation_name}'."
    if any(isinstance(d, OperationDefinitionNode) for d in document.definitions):
        return "Must provide operation name if query contains multiple operations."
    return "The document contains no operation."


def _is_request_error(result: Result) -> bool:
    """Execution never started: no data, and only path-less errors of the request kinds
    (parse, validation, variable coercion)."""
    errors = result.errors or []
    return result.data is None and bool(errors) and all(
        e.path is None and (e.extensions or {}).get("code") in REQUEST_ERROR_CODES
        for e in errors)


def _body(data: Any, errors: list[GraphQLError], media: str, *, request_error: bool,
          extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    # application/graphql-response+json: no `data` entry when execution did not start;
    # application/json keeps `"data": null` there, as this service always answered.
    if not (request_error and media == GRAPHQL_RESPONSE_JSON):
        body["data"] = data
    if errors:
        body["errors"] = [e.formatted for e in errors]
    if extensions:
        body["extensions"] = extensions
    return body


def _json(body: dict[str, Any], status: int, media: str,
          headers: dict[str, str] | None = None) -> Response:
    # The answer to one URL depends on Accept (page or JSON, and which status): caches that
    # keep GET answers (persisted queries by hash) must tell them apart.
    return Response(orjson.dumps(body), status_code=status,
                    headers={"vary": "Accept", **(headers or {})}, media_type=media)

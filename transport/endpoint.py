"""The /graphql endpoint: HTTP POST and graphql-transport-ws, authenticated per request or
per connection (`connection_init` payload)."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError, OperationType
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from auth import AuthError, parse_bearer
from resolvers.context import Context, Services
from transport.documents import DocumentCache
from transport.ws import TransportWSHandler

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class GraphQLEndpoint(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, schema: Any, *, ide: bool, allowed_origins: list[str]) -> None:
        self.documents = DocumentCache(schema._schema)
        super().__init__(
            schema, graphql_ide="graphiql" if ide else None, allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=10),
            allowed_origins=allowed_origins,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as exc:
            # Malformed requests get a GraphQL-shaped body with a code, like every error.
            body = {"errors": [{"message": exc.reason, "extensions": {"code": "BAD_REQUEST"}}]}
            response = JSONResponse(body, status_code=exc.status_code)
        await response(scope, receive, send)

    async def execute_single(self, request: Any, request_adapter: Any, sub_response: Any,
                             context: Context, root_value: Any,
                             request_data: GraphQLRequestData) -> ExecutionResult:
        """Subscriptions live on the WebSocket; over HTTP they would run once and return
        nothing useful, so say where they are instead."""
        compiled = self.documents.get(request_data.query or "", request_data.operation_name)
        operation = compiled.operation
        if operation is not None and operation.operation is OperationType.SUBSCRIPTION:
            error = GraphQLError("subscriptions are served over WebSocket "
                                 "(graphql-transport-ws) at /graphql",
                                 extensions={"code": "BAD_REQUEST"})
            return ExecutionResult(data=None, errors=[error])
        return await super().execute_single(request, request_adapter, sub_response, context,
                                            root_value, request_data)

    @staticmethod
    def services(request: Request | WebSocket) -> Services:
        services: Services = request.app.state.services
        return services

    async def get_context(self, request: Request | WebSocket,
                          response: Response | WebSocket) -> Context:
        context = Context(services=self.services(request), request=request, response=response)
        incoming = request.headers.get("x-request-id", "")
        if _REQUEST_ID.fullmatch(incoming):
            context.request_id = incoming
        if isinstance(request, Request):
            header = request.headers.get("authorization")
            if header is not None:
                context.auth = await self._authenticate(context, header)
        return context

    @staticmethod
    async def _authenticate(context: Context, header: str) -> Any:
        try:
            return await context.services.viewer_from_token(parse_bearer(header))
        except AuthError as exc:
            return exc

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        params = context.connection_params or {}
        header = params.get("authorization") or params.get("Authorization")
        if header is None and isinstance(params.get("authToken"), str):
            header = f"Bearer {params['authToken']}"
        if not isinstance(header, str):
            raise ConnectionRejectionError
        context.auth = await self._authenticate(context, header)
        if isinstance(context.auth, AuthError):
            log.info("websocket rejected: %s", context.auth)
            raise ConnectionRejectionError
        return None

"""The /graphql endpoint: GraphQL over HTTP (transport/http.py) and graphql-transport-ws,
authenticated per request (`Authorization` header) or per connection (`connection_init`)."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from auth import AuthError, parse_bearer
from graph_db.driver import DatabaseUnavailable
from resolvers.context import Context, Services
from transport.documents import DocumentCache
from transport.http import GraphQLHTTP
from transport.ide import GraphiQL
from transport.persisted import PersistedOperations
from transport.ws import TransportWSHandler

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class GraphQLEndpoint(GraphQL[Context, None]):
    """strawberry's view serves the WebSocket; HTTP is ours (GraphQLHTTP)."""

    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, schema: Any, *, ide: GraphiQL | None, allowed_origins: list[str],
                 persisted: PersistedOperations) -> None:
        self.documents = DocumentCache(schema._schema)
        self.persisted = persisted  # also read by the WebSocket handler
        self.http_handler = GraphQLHTTP(schema, self.documents, persisted, self._http_context, ide)
        super().__init__(
            schema, graphql_ide=None, allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=10),
            allowed_origins=allowed_origins,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        response = await self.http_handler(Request(scope=scope, receive=receive))
        await response(scope, receive, send)

    @staticmethod
    def services(request: Request | WebSocket) -> Services:
        services: Services = request.app.state.services
        return services

    async def _http_context(self, request: Request) -> Context:
        return await self.get_context(request, Response())

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
        """The viewer, or why not: a bad token, or a database that could not record the user
        (the operation then answers SERVICE_UNAVAILABLE instead of a 500)."""
        try:
            return await context.services.viewer_from_token(parse_bearer(header))
        except (AuthError, DatabaseUnavailable) as exc:
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
        if isinstance(context.auth, DatabaseUnavailable):
            raise context.auth  # closed with 1013, try again later (transport/ws.py)
        return None

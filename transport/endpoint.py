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

from auth import AuthError, Claims, parse_bearer
from graph_db.driver import DatabaseUnavailable
from resolvers import audit
from resolvers.context import Context, Services
from transport.connections import ConnectionLimiter
from transport.documents import DocumentCache
from transport.executor import DirectExecutor
from transport.http import Caller, GraphQLHTTP, HTTPLimits
from transport.ide import GraphiQL
from transport.persisted import PersistedOperations
from transport.rate_limit import RateLimiter
from transport.ws import TransportWSHandler
from transport.ws_limits import SocketLimits
from transport.ws_messages import bearer_of

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class GraphQLEndpoint(GraphQL[Context, None]):
    """strawberry's view serves the WebSocket; HTTP is ours (GraphQLHTTP). Every document
    goes through `documents` (admission, transport/documents.py), every operation takes from
    its caller's `rate` budget."""

    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, schema: Any, documents: DocumentCache, *, ide: GraphiQL | None,
                 allowed_origins: list[str], persisted: PersistedOperations,
                 rate: RateLimiter, connections: ConnectionLimiter, http: HTTPLimits,
                 sockets: SocketLimits, direct: DirectExecutor | None = None) -> None:
        self.documents = documents
        # Also read by the WebSocket handler:
        self.persisted, self.rate, self.connections = persisted, rate, connections
        self.http_limits, self.socket_limits = http, sockets
        self.http_handler = GraphQLHTTP(schema, documents, persisted, self, rate, http, ide,
                                        direct)
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

    # -- HTTP (transport.http.Gate) ------------------------------------------------------

    async def caller(self, request: Request) -> Caller:
        """By the token's user when it verifies (no database yet), else by address (behind
        a proxy: uvicorn's FORWARDED_ALLOW_IPS makes it the client's)."""
        auth: Claims | AuthError | None = None
        header = request.headers.get("authorization")
        if header is not None:
            try:
                auth = await self.services(request).verifier.verify(parse_bearer(header))
            except AuthError as exc:
                auth = exc
            else:
                return Caller(f"user:{auth.user_id}", auth)
        address = request.client.host if request.client else "unknown"
        return Caller(f"ip:{address}", auth)

    async def context(self, request: Request, caller: Caller) -> Context:
        context = await self.get_context(request, Response())
        if isinstance(caller.auth, Claims):
            context.auth = await context.services.viewer_for(caller.auth)
            await audit.session_started(context, caller.auth)
        else:
            context.auth = caller.auth
            if isinstance(caller.auth, AuthError):
                await audit.session_refused(context, request.headers.get("authorization"))
        return context

    # -- both ------------------------------------------------------------------------------

    async def get_context(self, request: Request | WebSocket,
                          response: Response | WebSocket) -> Context:
        context = Context(services=self.services(request), request=request, response=response)
        incoming = request.headers.get("x-request-id", "")
        if _REQUEST_ID.fullmatch(incoming):
            context.request_id = incoming
        return context

    # -- WebSocket ---------------------------------------------------------------------------

    @staticmethod
    async def _authenticate(context: Context, header: str) -> Any:
        """The viewer, or why not: a bad token, or a database that could not record the user
        (the operation then answers SERVICE_UNAVAILABLE instead of a 500)."""
        services = context.services
        try:
            claims = context.claims or await services.verifier.verify(parse_bearer(header))
            return await services.viewer_for(claims)
        except (AuthError, DatabaseUnavailable) as exc:
            return exc

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        header = bearer_of(context.connection_params)
        if header is None:
            raise ConnectionRejectionError
        context.auth = await self._authenticate(context, header)
        if isinstance(context.auth, AuthError):
            log.info("websocket rejected: %s", context.auth)
            await audit.session_refused(context, header)
            raise ConnectionRejectionError
        if isinstance(context.auth, DatabaseUnavailable):
            raise context.auth  # closed with 1013, try again later (transport/ws.py)
        await audit.session_started(context, context.auth.claims)
        return None


"""Wiring only: settings -> graph database -> services -> schema -> routes, in a lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from strawberry.extensions import ValidationCache

from auth import TokenVerifier
from graph_db.driver import HEALTH_INTERVAL_S, GraphDB
from graph_db.embedded import EmbeddedGraphServer
from graph_db.schema_setup import ensure_schema
from realtime.hub import Hub
from realtime.presence import PresenceStore, RedisPresence
from realtime.pubsub import MemoryPubSub, PubSub
from realtime.redis_pubsub import RedisPubSub
from realtime.tasks import spawn
from resolvers.context import Services
from resolvers.extensions import CodedErrors, OperationLoaders
from schema import build_schema
from settings import Settings, load_settings
from transport.document_store import DocumentStore, MemoryDocumentStore, RedisDocumentStore
from transport.endpoint import GraphQLEndpoint
from transport.fanout import GraphQLRenderer
from transport.ide import GraphiQL
from transport.persisted import PersistedOperations
from transport.tls import TransportSecurity, log_transport_security, serving_options
from transport.uvicorn_adapter import RawSendMiddleware, log_fanout_path, uvicorn_ws_options

log = logging.getLogger("collaboration")


@contextlib.asynccontextmanager
async def open_graph(settings: Settings) -> AsyncIterator[GraphDB]:
    """The configured server, or the embedded one (started here, stopped on the way out)."""
    async with contextlib.AsyncExitStack() as stack:
        if settings.neo4j_uri:
            uri, user, password = settings.neo4j_uri, settings.neo4j_user, settings.neo4j_password
            database = settings.neo4j_database
            log.info("graph database: %s as %s", uri, user)
        else:
            embedded = EmbeddedGraphServer(settings.graph_data_dir, heap=settings.graph_heap)
            await stack.enter_async_context(embedded)
            uri, user, password = embedded.bolt_uri, embedded.user, embedded.password
            database = embedded.database
            log.info("graph database: embedded ArcadeDB at %s, data in %s", uri,
                     settings.graph_data_dir.resolve())
        db = GraphDB.connect(uri, user, password, database=database,
                             pool_size=settings.connection_pool_size)
        stack.push_async_callback(db.close)
        if not settings.neo4j_uri:  # its supervisor restarts the JVM whenever it dies
            embedded.on_availability = db.report
            embedded.on_moved = lambda moved: spawn(db.repoint(moved))
        await ensure_schema(db)
        watch = asyncio.create_task(db.watch(HEALTH_INTERVAL_S), name="graph-health")
        stack.callback(watch.cancel)
        yield db


@contextlib.asynccontextmanager
async def open_hub(settings: Settings, db: GraphDB) -> AsyncIterator[Hub]:
    """Room events through Redis when REDIS_URL is set (several processes), else in memory."""
    presence_store: PresenceStore | None = None
    pubsub: PubSub
    if settings.redis_url:
        redis_pubsub = RedisPubSub(settings.redis_url)
        presence_store = RedisPresence(redis_pubsub.redis,
                                       ttl=2.5 * settings.ws_heartbeat_interval)
        pubsub = redis_pubsub
        log.info("room events: Redis pub/sub")
    else:
        pubsub = MemoryPubSub()
        log.info("room events: in-process (set REDIS_URL to run several processes)")
    hub = Hub(pubsub, db, presence_store=presence_store,
              presence_grace=settings.presence_grace_seconds,
              heartbeat_interval=settings.ws_heartbeat_interval,
              retention=settings.event_log_retention)
    db.on_availability(hub.database_changed)  # subscriptions are told when it goes away
    await hub.start()
    try:
        yield hub
    finally:
        await hub.close()


def persisted_operations(settings: Settings) -> PersistedOperations:
    """Persisted queries shared through Redis when REDIS_URL is set (every instance knows a
    document registered on one), else kept per process; trusted documents from the manifest."""
    store: DocumentStore
    if settings.redis_url:
        store = RedisDocumentStore(settings.redis_url, settings.persisted_queries_ttl)
    else:
        store = MemoryDocumentStore(settings.persisted_queries_cache_size,
                                    settings.persisted_queries_cache_bytes)
    manifest = settings.trusted_documents
    if settings.persisted_queries_only:
        log.info("persisted queries: only the %d operations of %s run", len(manifest),
                 settings.persisted_queries_manifest)
    else:
        log.info("persisted queries: automatic, %s", "in Redis" if settings.redis_url
                 else "in process")
    return PersistedOperations(store, manifest, only=settings.persisted_queries_only)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()

    # Validating a document costs more than most operations' own work: cache it per document
    # (docs/benchmarks.md). Not ParserCache: a syntax error raised from its hook skips the
    # error-coding extension.
    schema = build_schema(extensions=[
        lambda: ValidationCache(maxsize=1000), OperationLoaders, CodedErrors])
    ide = GraphiQL() if settings.is_development else None  # never in staging or production
    persisted = persisted_operations(settings)
    endpoint = GraphQLEndpoint(schema, ide=ide, allowed_origins=settings.cors_origins,
                               persisted=persisted)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_graph(settings) as db, open_hub(settings, db) as hub:
            hub.renderer = GraphQLRenderer(endpoint.documents.schema, hub.hints)
            verifier = TokenVerifier(settings)
            app.state.services = Services(settings=settings, db=db, verifier=verifier, hub=hub)
            tune_gc()
            try:
                yield
            finally:
                await verifier.aclose()
                await persisted.store.aclose()
    routes = [
        Route("/graphql", endpoint, methods=None),  # the endpoint answers other methods 405
        WebSocketRoute("/graphql", endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    if ide is not None:
        routes.append(Route("/graphiql/{name}", ide.asset, methods=["GET"]))
    middleware = [
        Middleware(TransportSecurity, required=settings.requires_tls,
                   hsts_max_age=settings.hsts_max_age),
        Middleware(RawSendMiddleware),
        Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                   allow_methods=["GET", "POST"], allow_credentials=True,
                   allow_headers=["authorization", "content-type", "x-request-id"]),
    ]
    return Starlette(debug=settings.debug, routes=routes, middleware=middleware,
                     lifespan=lifespan)


def tune_gc() -> None:
    """Start-up objects never die: freeze them out of the collector's scans, and collect
    less often (full collections paused fan-out for hundreds of ms; docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None or not await services.db.ping():
        return JSONResponse({"status": "unavailable", "graph": False}, status_code=503)
    return JSONResponse({"status": "ready", "graph": True})


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> None:
    import signal

    import uvicorn

    settings = load_settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal once it has restored
    # the previous handler: with the default one the process dies of SIGTERM (status 143)
    # after a clean stop. This handler turns that into exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    options = uvicorn_ws_options(settings.ws_heartbeat_interval)
    log_fanout_path(options["ws"])
    log_transport_security(settings)
    uvicorn.run(create_app(settings), host=settings.collaboration_host,
                port=settings.collaboration_port, log_level=settings.log_level.lower(),
                lifespan="on", **options, **serving_options(settings))


if __name__ == "__main__":
    main()

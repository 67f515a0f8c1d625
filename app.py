"""Wiring only: settings -> graph database -> services -> schema -> routes, in a lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import ConnectionPool, Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from assistant.gemini import backend_from_settings
from assistant.limits import MemoryQuotas, QuotaConfig, Quotas, RedisQuotas
from assistant.report import Report
from assistant.service import Assistant
from assistant.upstream import Policy
from audit import (
    AuditSink,
    AuditTrail,
    GraphSink,
    JsonLinesSink,
    MemorySessions,
    RedisSessions,
    SessionLedger,
)
from auth import TokenVerifier
from files.crypto import KeyRing
from files.keys import master_key
from files.links import Links
from files.scanner import ClamdScanner, Scanner
from files.service import FileService
from files.storage import LocalBlobStore
from graph_db import digests as outbox
from graph_db.driver import HEALTH_INTERVAL_S, GraphDB
from graph_db.embedded import EmbeddedGraphServer
from graph_db.files import FileRecord
from graph_db.group_commit import GroupCommit
from graph_db.schema_setup import ensure_schema
from notify.digests import Digests, Unsubscribe
from notify.inbox import Inbox
from notify.mailer import SmtpMailer
from notify.unsubscribe import UnsubscribeEndpoint
from observability import logs, tracing
from observability.metrics import MetricsEndpoint, forget_this_process
from observability.sockets import SocketMetrics
from realtime.hub import Hub
from realtime.presence import PresenceStore, RedisPresence
from realtime.pubsub import MemoryPubSub, PubSub
from realtime.redis_pubsub import RedisPubSub
from realtime.tasks import spawn
from resolvers.context import Services
from resolvers.extensions import CodedErrors, OperationLoaders
from rtc import Rtc
from rtc.calls import CallService
from rtc.recording import RecordingService
from rtc.screen import ScreenShares
from rtc.signals import SessionRates, SignalRouter
from rtc.state import CallStore, MemoryCallStore, RedisCallStore
from schema import build_schema
from settings import Settings, load_settings
from transport.admission import AdmittedDocuments
from transport.connections import ConnectionLimiter, ConnectionSlots, MemorySlots, RedisSlots
from transport.document_store import DocumentStore, MemoryDocumentStore, RedisDocumentStore
from transport.documents import Admission, DocumentCache
from transport.downloads import Downloads
from transport.endpoint import GraphQLEndpoint
from transport.executor import DirectExecutor
from transport.fanout import GraphQLRenderer
from transport.http import HTTPLimits
from transport.ide import GraphiQL
from transport.limits import OperationLimits
from transport.persisted import PersistedOperations
from transport.rate_limit import MemoryBudget, RateBudget, RateLimiter, RedisBudget
from transport.tls import TransportSecurity, log_transport_security, serving_options
from transport.uploads import PREFLIGHT_HEADERS, UploadLimits
from transport.uvicorn_adapter import (
    RawSendMiddleware,
    close_code,
    log_fanout_path,
    uvicorn_ws_options,
)
from transport.ws_limits import SocketLimits

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


@contextlib.asynccontextmanager
async def open_audit(settings: Settings, db: GraphDB, redis: ConnectionPool | None
                     ) -> AsyncIterator[tuple[AuditTrail, SessionLedger]]:
    """The audit trail into the graph (and AUDIT_LOG_FILE), written off the request path;
    sessions known across instances through Redis when REDIS_URL is set (on the limiters'
    pool: the same server, the same short timeouts)."""
    sinks: list[AuditSink] = [GraphSink(db)] if settings.audit_enabled else []
    if settings.audit_log_file is not None and settings.audit_enabled:
        sinks.append(JsonLinesSink(settings.audit_log_file))
        log.info("audit trail: also as JSON lines in %s", settings.audit_log_file)
    trail = AuditTrail(sinks)
    sessions: SessionLedger = (RedisSessions(Redis(connection_pool=redis))
                               if redis is not None else MemorySessions())
    trail.start()
    try:
        yield trail, sessions
    finally:
        await trail.aclose()  # before the database closes: what is left is written
        await sessions.aclose()


def open_rtc(settings: Settings, db: GraphDB, hub: Hub, trail: AuditTrail,
             redis: ConnectionPool | None) -> Rtc:
    """Calls: their state in Redis when REDIS_URL is set (atomic across instances; on the
    limiters' pool: the same server, the same short timeouts), else in this process; signals
    over the hub's pub/sub."""
    store: CallStore = (RedisCallStore(Redis(connection_pool=redis)) if redis is not None
                        else MemoryCallStore())
    router = SignalRouter(hub.pubsub)
    calls = CallService(store, hub, router, trail, settings)
    return Rtc(calls=calls,
               screens=ScreenShares(calls, enabled=settings.enable_screen_sharing),
               recordings=RecordingService(calls, router, db,
                                           enabled=settings.enable_video_recording,
                                           directory=settings.recording_dir),
               router=router, signal_rates=SessionRates(settings.signal_rate,
                                                        settings.signal_burst),
               report_rates=SessionRates(1.0, 10))


async def open_assistant(settings: Settings, db: GraphDB, hub: Hub, trail: AuditTrail,
                         inbox: Inbox, redis: ConnectionPool | None) -> Assistant | None:
    """The assistant when ENABLE_AI_ASSISTANT is on: one SDK client for the process; without
    credentials it answers AI_NOT_CONFIGURED. Its limits are shared through Redis when
    REDIS_URL is set (the limiters' pool)."""
    if not settings.enable_ai_assistant:
        log.info("assistant: off (ENABLE_AI_ASSISTANT)")
        return None
    backend = backend_from_settings(settings)
    config = QuotaConfig(user_requests=settings.ai_user_requests,
                         user_period_s=settings.ai_rate_period_seconds,
                         room_requests=settings.ai_room_requests,
                         room_period_s=settings.ai_rate_period_seconds,
                         max_concurrency=settings.ai_max_concurrency,
                         room_daily_tokens=settings.ai_daily_token_budget)
    # A slot outlives the longest answer, so only a dead instance's lapse.
    lease = settings.ai_timeout_seconds + 60
    quotas: Quotas = (RedisQuotas(Redis(connection_pool=redis), config, lease_s=lease)
                      if redis is not None else MemoryQuotas(config, lease_s=lease))
    policy = Policy(total_s=settings.ai_timeout_seconds,
                    first_token_s=settings.ai_first_token_timeout_seconds,
                    retries=settings.ai_retries)
    assistant = Assistant(db=db, hub=hub, quotas=quotas, backend=backend, policy=policy,
                          report=Report(trail, settings.ai_backend),
                          model=settings.ai_model_name,
                          max_input_tokens=settings.ai_max_input_tokens,
                          max_output_tokens=settings.ai_max_output_tokens,
                          stale_after_s=lease,
                          notify=inbox.assistant_replied)
    await assistant.start()
    return assistant


async def close_assistant(assistant: Assistant | None) -> None:
    if assistant is not None:
        await assistant.close()


def open_files(settings: Settings, db: GraphDB) -> tuple[FileService, Links]:
    """Encrypted blobs on the local filesystem (FILE_STORAGE_DIR), data keys wrapped by the
    master key, clamd when configured (without one: UNSCANNED, development only)."""
    blobs = LocalBlobStore(settings.file_storage_dir)
    blobs.purge_scratch(older_than_s=3600)  # plaintext a crash may have left behind
    master = master_key(settings)
    keys = KeyRing(master, key_id=hashlib.sha256(master).hexdigest()[:8])
    scanner: Scanner | None = None
    if settings.file_scanning == "on" and (settings.clamav_socket or settings.clamav_host):
        scanner = ClamdScanner(socket_path=settings.clamav_socket,
                               host=settings.clamav_host,
                               port=settings.clamav_port if settings.clamav_host else None)
        log.info("files: scanned by %r", scanner)
    else:
        log.warning("files: NO VIRUS SCANNER configured (CLAMAV_SOCKET or CLAMAV_HOST): "
                    "uploads are stored UNSCANNED")
    return (FileService(db, blobs, keys, scanner, retention_days=settings.file_retention_days),
            Links(master, ttl=settings.download_url_ttl))


def open_digests(settings: Settings, db: GraphDB, hub: Hub) -> Digests:
    """Email digests through SMTP_HOST (none without it: in-app notifications only)."""
    mailer = None
    if settings.smtp_host:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        mailer = SmtpMailer(settings.smtp_host, settings.smtp_port,
                            username=settings.smtp_username, password=password,
                            starttls=settings.smtp_starttls)
        log.info("email digests: through %s:%d", settings.smtp_host, settings.smtp_port)
    else:
        log.info("email digests: off (set SMTP_HOST)")
    digests = Digests(db, mailer, hub.presence.online_users,
                      delay_s=settings.notification_email_delay_seconds,
                      sender=settings.email_from,
                      base_url=settings.public_base_url or "http://localhost:8002",
                      unsubscribe=Unsubscribe(settings.jwt_secret_key.encode()
                                              + master_key(settings)))
    hub.presence.on_offline.append(lambda user_id: outbox.seen(db, user_id))
    return digests


async def audit_scan(trail: AuditTrail, record: FileRecord) -> None:
    """A rescan's verdict (an upload's own is its mutation's record)."""
    trail.system("file.scan", actor_id=record.uploader_id, room_id=record.room_id,
                 object_type="File", object_id=record.id,
                 code=None if record.status == "CLEAN" else record.status)


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


def admission(settings: Settings) -> Admission:
    """The operation limits, and outside development no introspection (unless
    ENABLE_INTROSPECTION) and no "Did you mean" hints."""
    return Admission(
        OperationLimits(max_depth=settings.operation_max_depth,
                        max_aliases=settings.operation_max_aliases,
                        max_directives=settings.operation_max_directives,
                        max_tokens=settings.operation_max_tokens,
                        max_cost=settings.operation_max_cost),
        introspection=settings.introspection, suggestions=settings.is_development)


@dataclass
class Limiters:
    rate: RateLimiter
    connections: ConnectionLimiter
    pool: ConnectionPool | None  # Redis connections for both, when REDIS_URL is set

    async def aclose(self) -> None:
        await self.connections.aclose()
        await self.rate.aclose()
        if self.pool is not None:
            await self.pool.aclose()


def limiters(settings: Settings) -> Limiters:
    """Rate budgets and connection counts in Redis when REDIS_URL is set (one budget per user
    across every instance), else in this process."""
    budget: RateBudget
    slots: ConnectionSlots
    pool = None
    if settings.redis_url:
        # Short timeouts: a Redis that hangs must not hold requests (they are then admitted).
        pool = ConnectionPool.from_url(settings.redis_url, socket_timeout=2,
                                       socket_connect_timeout=2)
        budget = RedisBudget(pool, settings.redis_url, settings.rate_limit_requests,
                             settings.rate_limit_period)
        slots = RedisSlots(Redis(connection_pool=pool), settings.ws_max_connections,
                           ttl=2.5 * settings.ws_heartbeat_interval)
    else:
        budget = MemoryBudget(settings.rate_limit_requests, settings.rate_limit_period)
        slots = MemorySlots(settings.ws_max_connections)
    return Limiters(RateLimiter(budget, settings.rate_limit_requests),
                    ConnectionLimiter(slots, settings.ws_max_connections,
                                      refresh_every=settings.ws_heartbeat_interval), pool)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()

    # Documents are admitted (parsed, held to the limits, validated) once each by the
    # DocumentCache, which strawberry then runs from (AdmittedDocuments); its extensions are
    # made per operation, after `documents` is bound below.
    suggestions = settings.is_development
    # Spans only with a collector (OTEL_EXPORTER_OTLP_ENDPOINT); closed in the lifespan.
    tracer = tracing.tracer_provider(settings.otel_exporter_otlp_endpoint,
                                     settings.otel_service_name)
    schema = build_schema(extensions=[
        lambda: AdmittedDocuments(documents), OperationLoaders,
        lambda: CodedErrors(suggestions=suggestions), *tracing.extensions(tracer)])
    documents = DocumentCache(schema._schema, admission(settings))
    ide = GraphiQL() if settings.is_development else None  # never in staging or production
    persisted = persisted_operations(settings)
    limits = limiters(settings)
    # Uploads stream into the blob store's scratch directory: a kept one is renamed into place.
    scratch = settings.file_storage_dir / ".tmp"
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    endpoint = GraphQLEndpoint(
        schema, documents, ide=ide, allowed_origins=settings.cors_origins,
        persisted=persisted, rate=limits.rate, connections=limits.connections,
        http=HTTPLimits(max_bytes=settings.request_max_bytes,
                        timeout=settings.request_timeout,
                        uploads=UploadLimits(max_upload_bytes=settings.max_upload_mb * 1024 * 1024,
                                             scratch_dir=scratch)),
        sockets=SocketLimits(max_subscriptions=settings.ws_max_subscriptions,
                             message_rate=settings.ws_message_rate,
                             message_burst=settings.ws_message_burst,
                             timeout=settings.request_timeout),
        # HTTP operations on graphql-core directly, unless spans need strawberry's hooks.
        direct=None if tracer else DirectExecutor(schema, suggestions=suggestions))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_graph(settings) as db, open_hub(settings, db) as hub, \
                open_audit(settings, db, limits.pool) as (trail, sessions):
            hub.renderer = GraphQLRenderer(endpoint.documents.schema, hub.hints)
            verifier = TokenVerifier(settings)
            sends = GroupCommit(db)
            rtc = open_rtc(settings, db, hub, trail, limits.pool)
            await rtc.start()
            inbox = Inbox(db, hub.pubsub)
            files, links = open_files(settings, db)
            files.on_scanned.append(inbox.file_scanned)
            files.on_scanned.append(lambda f: audit_scan(trail, f))
            files.start()
            rtc.recordings.keep = files.keep_recording
            digests = open_digests(settings, db, hub)
            digests.start()
            assistant = await open_assistant(settings, db, hub, trail, inbox, limits.pool)
            app.state.services = Services(settings=settings, db=db, verifier=verifier, hub=hub,
                                          audit=trail, sessions=sessions, sends=sends, rtc=rtc,
                                          inbox=inbox, files=files, links=links,
                                          digests=digests, assistant=assistant)
            limits.connections.start()
            tune_gc()
            try:
                yield
            finally:
                await close_assistant(assistant)
                await digests.close()
                await files.close()
                await inbox.drain()
                await rtc.close()
                await sends.close()
                await verifier.aclose()
                await persisted.store.aclose()
                await limits.aclose()
                await asyncio.to_thread(tracing.shutdown, tracer)  # flushes: may wait
                forget_this_process()
    routes = [
        Route("/graphql", endpoint, methods=None),  # the endpoint answers other methods 405
        WebSocketRoute("/graphql", endpoint),
        Route("/files/{token}", Downloads().handle, methods=["GET"]),
        Route("/notifications/unsubscribe/{token}",
              UnsubscribeEndpoint().handle,
              methods=["GET", "POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", MetricsEndpoint(settings.metrics_token).handle, methods=["GET"]),
    ]
    if ide is not None:
        routes.append(Route("/graphiql/{name}", ide.asset, methods=["GET"]))
    middleware = [
        Middleware(TransportSecurity, required=settings.requires_tls,
                   hsts_max_age=settings.hsts_max_age),
        Middleware(RawSendMiddleware),
        Middleware(SocketMetrics, close_code=close_code),  # inside: sees the server's send
        Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                   allow_methods=["GET", "POST"], allow_credentials=True,
                   allow_headers=["authorization", "content-type", "x-request-id",
                                  *PREFLIGHT_HEADERS]),
    ]
    return Starlette(debug=settings.debug, routes=routes, middleware=middleware,
                     lifespan=lifespan)


def tune_gc() -> None:
    """Start-up objects never die: freeze them out of the collector's scans, and collect
    less often (full collections paused fan-out for hundreds of ms; docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    # A young collection's pause grows with the objects it scans: 50,000 made 60-130 ms
    # pauses during fan-out (bench: collab_gc_pause_max_seconds); 5,000 keeps them ~10 ms.
    gc.set_threshold(5_000, 20, 20)


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
    logs.configure(settings.log_level, settings.log_format)  # uvicorn's loggers too
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal once it has restored
    # the previous handler: with the default one the process dies of SIGTERM (status 143)
    # after a clean stop. This handler turns that into exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    options = uvicorn_ws_options(settings.ws_heartbeat_interval, settings.ws_max_message_bytes)
    log_fanout_path(options["ws"])
    log_transport_security(settings)
    uvicorn.run(create_app(settings), host=settings.collaboration_host,
                port=settings.collaboration_port, log_level=settings.log_level.lower(),
                lifespan="on", log_config=None, **options, **serving_options(settings))


if __name__ == "__main__":
    main()

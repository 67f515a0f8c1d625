"""The one graph database driver of the process, and the only way queries reach it."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from neo4j import (
    READ_ACCESS,
    WRITE_ACCESS,
    AsyncDriver,
    AsyncGraphDatabase,
    AsyncManagedTransaction,
    AsyncResult,
    AsyncTransaction,
)
from neo4j.exceptions import (
    AuthError,
    DatabaseError,
    DriverError,
    IncompleteCommit,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
)

from graph_db.coalesce import Coalescer, Fetch
from observability import metrics
from observability.metrics import DB_READ, DB_WRITE

log = logging.getLogger(__name__)
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
RETRY_FOR_S = 30.0  # write conflicts: they clear in milliseconds, but a busy room queues
UNAVAILABLE_FOR_S = 2.0  # an unreachable server: callers hear SERVICE_UNAVAILABLE after this
CONNECT_TIMEOUT_S = 5.0
HEALTH_INTERVAL_S = 2.0  # a check this often notices an outage when nothing else runs
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.005, 0.25
UNKNOWN_SERVER_ERROR = "Neo.DatabaseError.General.UnknownError"


def _retry_budget(exc: Exception) -> float | None:
    """How long an error of this kind is worth retrying; None: not at all."""
    if _unreachable(exc) or _concealed(exc):
        return UNAVAILABLE_FOR_S
    if isinstance(exc, Neo4jError) and exc.is_retryable():  # write conflicts, deadlocks
        return RETRY_FOR_S
    return None


def _unreachable(exc: Exception) -> bool:
    """The server is not there, or not ready yet. A restarting ArcadeDB accepts Bolt before it
    can authenticate: it then refuses valid credentials ("no longer valid") and answers
    "BEGIN not expected in state: AUTHENTICATION" for a while (seen in
    tests/test_database_outage.py); both pass once it is up."""
    if isinstance(exc, (ServiceUnavailable, SessionExpired, AuthError)):
        return True
    return isinstance(exc, Neo4jError) and "not expected in state" in (exc.message or "")


def _concealed(exc: Exception) -> bool:
    """A server error whose cause the server does not tell. ArcadeDB in production mode
    answers this way while it stops ("database is closed", under transactions in flight) and
    while it starts ("database does not exist" until it is loaded): an outage, not a bug. A
    real server-side bug answers the same, so it is retried only as long as an outage would
    be, then told apart by a ping (GraphDB._retrying)."""
    return isinstance(exc, DatabaseError) and exc.code == UNKNOWN_SERVER_ERROR


class DatabaseUnavailable(Exception):
    """The graph database could not be reached within UNAVAILABLE_FOR_S (stopped, restarting,
    unreachable), or the connection broke during a commit (whose outcome is then unknown:
    retry with an idempotency key). Operations answer SERVICE_UNAVAILABLE."""


Listener = Callable[[bool], None]


_background: contextvars.ContextVar[bool] = contextvars.ContextVar("graph_background",
                                                                   default=False)


@contextlib.contextmanager
def in_background() -> Iterator[None]:
    """Queries sent inside count as background work (the audit trail's batches), apart from
    the operations': the N+1 guard counts what an operation itself sends."""
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)


@dataclass
class QueryStats:
    """Counts queries sent to the server, so tests can prove DataLoaders batch (N+1 guard),
    and attempts retried after a transient error (conflicts, outages)."""

    queries: int = 0
    background: int = 0
    retried: int = 0
    answered_at: float = 0.0  # time.monotonic() of the last statement the server answered

    def count(self) -> None:
        if _background.get():
            self.background += 1
        else:
            self.queries += 1


class Tx:
    """A managed transaction that returns plain dicts and counts every query it sends."""

    def __init__(self, tx: AsyncManagedTransaction | AsyncTransaction,
                 stats: QueryStats) -> None:
        self._tx = tx
        self._stats = stats

    async def rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        self._stats.count()
        rows = await _rows(await self._tx.run(query, params))
        self._stats.answered_at = time.monotonic()
        return rows

    async def one(self, query: str, **params: Any) -> dict[str, Any] | None:
        rows = await self.rows(query, **params)
        return rows[0] if rows else None


Work = Callable[[Tx], Awaitable[T]]


async def _rows(result: AsyncResult) -> list[dict[str, Any]]:
    """Records as dicts. Not Record.data(): it walks every value looking for nodes to
    convert (~15 µs a record in profiles), and every statement here returns plain values and
    map projections, never nodes."""
    keys = result.keys()
    return [dict(zip(keys, record, strict=True)) async for record in result]


class _Timed:
    """collab_db_query_seconds of one statement or transaction (each attempt), session
    included: what a caller waits for the database."""

    __slots__ = ("histogram", "started")

    def __init__(self, mode: str) -> None:
        self.histogram = DB_WRITE if mode == WRITE_ACCESS else DB_READ
        self.started = 0.0

    async def __aenter__(self) -> None:
        self.started = time.perf_counter()

    async def __aexit__(self, *exc: object) -> None:
        self.histogram.observe(time.perf_counter() - self.started)


class GraphDB:
    """Owns the async driver; reads and writes run as retried transaction functions.

    Retries matter here: ArcadeDB resolves concurrent writes optimistically (TransientError),
    and Neo4j can deadlock-abort; `_retrying` re-runs the whole unit of work.
    """

    def __init__(self, driver: AsyncDriver, database: str | None,
                 reconnect: Callable[[str], AsyncDriver] | None = None) -> None:
        self.driver = driver
        self.database = database
        self._reconnect = reconnect
        self.stats = QueryStats()
        self._key_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Whether the server answered lately; listeners hear every change (the hub tells
        # subscriptions when it goes away).
        self.available = True
        self._listeners: list[Listener] = []
        self._coalescers: dict[Any, Coalescer[Any, Any]] = {}

    def coalesced(self, fetch: Fetch[K, V]) -> Coalescer[K, V]:
        """The process's one coalescer of `fetch` (graph_db/coalesce.py)."""
        found = self._coalescers.get(fetch)
        if found is None:
            found = self._coalescers[fetch] = Coalescer(self, fetch)
        return found

    def on_availability(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def report(self, available: bool) -> None:
        """What the last attempt, a health check or the embedded server's supervisor saw."""
        if available is self.available:
            return
        self.available = available
        if available:
            log.warning("graph database reachable again")
        else:
            log.error("graph database unreachable: operations answer SERVICE_UNAVAILABLE")
        for listener in list(self._listeners):
            listener(available)

    @classmethod
    def connect(cls, uri: str, user: str, password: str, *, database: str | None,
                pool_size: int = 20) -> GraphDB:
        def make(at: str) -> AsyncDriver:
            return AsyncGraphDatabase.driver(
                at, auth=(user, password), max_connection_pool_size=pool_size,
                connection_timeout=CONNECT_TIMEOUT_S)

        return cls(make(uri), database, make)

    async def repoint(self, uri: str) -> None:
        """The server moved (the embedded one restarted on another port): a new driver for
        the new address; operations already running on the old one finish or fail."""
        if self._reconnect is None:
            raise RuntimeError("this GraphDB was not made by connect()")
        old, self.driver = self.driver, self._reconnect(uri)
        await old.close()

    async def read(self, work: Work[T]) -> T:
        """Runs `work` in a read transaction, retried like writes."""
        return await self._retrying(lambda: self._attempt(work, READ_ACCESS))

    async def write(self, work: Work[T], *, serialize_on: str | None = None) -> T:
        """Runs `work` in a retried write transaction.

        Writes that contend on one node (a room's lock or sequence) pass `serialize_on`: they
        queue on an in-process lock instead of colliding in the database, where each conflict
        costs a rollback and a retry. Other processes still collide; they retry quickly.
        """
        return await self._serialized(serialize_on, lambda: self._attempt(work, WRITE_ACCESS))

    async def _statement(self, query: str, params: dict[str, Any],
                         mode: str) -> list[dict[str, Any]]:
        async with _Timed(mode), self.driver.session(database=self.database,
                                                     default_access_mode=mode) as session:
            self.stats.count()
            result = await session.run(query, params)
            rows = await _rows(result)
            await result.consume()
            self.stats.answered_at = time.monotonic()
            return rows

    async def _serialized(self, key: str | None, attempt: Callable[[], Awaitable[T]]) -> T:
        if key is None:
            return await self._retrying(attempt)
        lock = self._key_locks.get(key)
        if lock is None:
            lock = self._key_locks[key] = asyncio.Lock()
        async with lock:
            return await self._retrying(attempt)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Our own retry loop, not execute_write's: the driver backs off 1, 2, 4, 8 s after a
        conflict, and under a room lock that stalls every writer of the room; optimistic
        conflicts clear in milliseconds, so retry in milliseconds, with jitter. A server
        that cannot be reached is retried briefly (a restart, a failover), then reported as
        DatabaseUnavailable instead of holding the caller for half a minute."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                result = await attempt()
            except IncompleteCommit as exc:
                # Committed or not, nobody knows: running it again could apply it twice.
                self.report(False)
                raise DatabaseUnavailable(f"connection lost during a commit: {exc}") from exc
            except (DriverError, Neo4jError) as exc:
                budget = _retry_budget(exc)
                if budget is None:
                    raise
                if loop.time() + backoff > started + budget:
                    if budget == UNAVAILABLE_FOR_S and not (_concealed(exc)
                                                            and await self.ping()):
                        self.report(False)
                        raise DatabaseUnavailable(f"graph database unreachable: {exc}") from exc
                    raise
                self.stats.retried += 1
                (metrics.DB_RETRIED_CONFLICT if budget == RETRY_FOR_S
                 else metrics.DB_RETRIED_UNAVAILABLE).inc()
                log.debug("retrying after %s", exc.__class__.__name__)
            else:
                if not self.available:
                    self.report(True)
                return result
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _attempt(self, work: Work[T], mode: str) -> T:
        async with _Timed(mode), self.driver.session(database=self.database,
                                                     default_access_mode=mode) as session:
            tx = await session.begin_transaction()
            try:
                result = await work(Tx(tx, self.stats))
                await tx.commit()
                return result
            finally:
                if not tx.closed():
                    await tx.rollback()

    async def read_rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """One read statement, auto-committed (no BEGIN/COMMIT round trips), retried."""
        return await self._retrying(lambda: self._statement(query, params, READ_ACCESS))

    async def read_table(self, query: str, columns: tuple[str, ...],
                         **params: Any) -> list[dict[str, Any]]:
        """A read whose rows come back as one record: `query` ends in
        `RETURN collect([<one value per column>]) AS rows`. The driver spends ~50 µs of
        Python per record received (a message, an inbox pop, a wait_for each), more than most
        of our statements take in the database; a list of 50 rows costs one record.
        (Lists, not maps: ArcadeDB turns `collect({key: k, u: u {.*}})` into the projection
        alone.)"""
        rows = await self.read_rows(query, **params)
        return [dict(zip(columns, row, strict=True)) for row in rows[0]["rows"]] if rows else []

    async def write_rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return await self.write(lambda tx: tx.rows(query, **params))

    async def ping(self, deadline_s: float = 3.0) -> bool:
        # One plain query under a deadline, not a retried transaction: a readiness probe
        # wants the answer now.
        started = time.monotonic()
        try:
            async with asyncio.timeout(deadline_s):
                async with self.driver.session(database=self.database) as session:
                    result = await session.run("RETURN 1 AS ok")
                    record = await result.single()
        except Exception:  # any driver failure or the deadline means "not ready"...
            # ... unless the server answered others meanwhile: a burst of work (a reconnect
            # storm) queues the ping behind it in our own connection pool, and that is not
            # an outage (it once ended every subscription with SERVICE_UNAVAILABLE).
            if self.stats.answered_at >= started:
                return True
            log.debug("graph database ping failed", exc_info=True)
            return False
        return record is not None and record.get("ok") == 1

    async def watch(self, interval: float) -> None:
        """Runs until cancelled: a health check every `interval`, so an outage is noticed
        (and its end) even when no operation is running."""
        while True:
            await asyncio.sleep(interval)
            self.report(await self.ping(deadline_s=min(interval, 3.0)))

    async def close(self) -> None:
        await self.driver.close()

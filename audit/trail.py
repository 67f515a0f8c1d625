"""The audit trail: records taken on the request path without waiting, written in batches.

`record()` only appends to a queue; one task per sink (the graph, a JSON-lines file) writes
what has gathered every FLUSH_S or as soon as BATCH records wait. A sink that fails (the
database is down) keeps its records and tries again, so an outage delays the trail but loses
nothing, up to MAX_PENDING records per sink; past that the oldest are dropped, loudly (an
audit gap is an incident: logged at ERROR and counted in `dropped`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Protocol

from graph_db.audit import AuditRecord, Outcome, record_id
from observability.metrics import AUDIT_DROPPED, AUDIT_PENDING, AUDIT_WRITTEN

log = logging.getLogger(__name__)
FLUSH_S = 1.0  # a batch per second: each statement costs the database more than its rows
BATCH = 500
MAX_PENDING = 100_000
RETRY_S = (0.5, 1.0, 2.0, 5.0)


class AuditSink(Protocol):
    name: str

    async def write(self, records: list[AuditRecord]) -> None: ...


class _Feed:
    """One sink's queue and the task that drains it."""

    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink
        self.pending: collections.deque[AuditRecord] = collections.deque()
        self.wake = asyncio.Event()
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None
        # flush() (shutdown, tests) and run() must not write the same batch twice.
        self.lock = asyncio.Lock()

    def put(self, record: AuditRecord) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1
            AUDIT_DROPPED.labels(self.sink.name).inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("audit sink %s is behind by %d records: %d dropped so far",
                          self.sink.name, MAX_PENDING, self.dropped)
        self.pending.append(record)
        if len(self.pending) >= BATCH:
            self.wake.set()

    async def run(self) -> None:
        failures = 0
        while True:
            if not self.pending or len(self.pending) < BATCH:
                # Wait for a full batch or FLUSH_S, whichever comes first.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), FLUSH_S)
            self.wake.clear()
            AUDIT_PENDING.labels(self.sink.name).set(len(self.pending))
            if not await self.flush_once():
                failures += 1
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S)) - 1])
            else:
                failures = 0

    async def flush_once(self) -> bool:
        """Writes up to BATCH waiting records; False when the sink failed (kept for later)."""
        async with self.lock:
            if not self.pending:
                return True
            batch = [self.pending[i] for i in range(min(BATCH, len(self.pending)))]
            try:
                await self.sink.write(batch)
            except Exception:
                log.warning("audit sink %s failed; %d records kept for the next try",
                            self.sink.name, len(self.pending), exc_info=True)
                return False
            # put() may have dropped some of the batch meanwhile (MAX_PENDING): pop only
            # what is still at the front.
            for record in batch:
                if self.pending and self.pending[0] is record:
                    self.pending.popleft()
            AUDIT_WRITTEN.labels(self.sink.name).inc(len(batch))
            return True


class AuditTrail:
    def __init__(self, sinks: list[AuditSink]) -> None:
        self._feeds = [_Feed(sink) for sink in sinks]

    @property
    def enabled(self) -> bool:
        """False only without sinks (AUDIT_ENABLED=false, to measure the trail's cost)."""
        return bool(self._feeds)

    def record(self, record: AuditRecord) -> None:
        for feed in self._feeds:
            feed.put(record)

    def system(self, action: str, *, actor_id: str | None, room_id: str | None,
               object_type: str, object_id: str | None, code: str | None = None) -> None:
        """What the service did by itself on someone's behalf (a participant whose socket
        went away leaves the call): no request, the affected user as the actor."""
        at_ms = int(time.time() * 1000)
        self.record(AuditRecord(id=record_id(at_ms), at_ms=at_ms, action=action,
                                outcome=Outcome.ALLOWED, actor_id=actor_id,
                                object_type=object_type, object_id=object_id,
                                room_id=room_id, code=code))

    @property
    def pending(self) -> int:
        return max((len(f.pending) for f in self._feeds), default=0)

    @property
    def dropped(self) -> int:
        return sum(f.dropped for f in self._feeds)

    def start(self) -> None:
        for feed in self._feeds:
            if feed.task is None:
                feed.task = asyncio.create_task(feed.run(), name=f"audit-{feed.sink.name}")

    async def flush(self) -> None:
        """Everything recorded so far written, as far as the sinks take it (tests, shutdown)."""
        for feed in self._feeds:
            while feed.pending and await feed.flush_once():
                pass

    async def aclose(self) -> None:
        """Stops the writers, then writes what is left (a sink that still fails loses it)."""
        for feed in self._feeds:
            if feed.task is not None:
                feed.task.cancel()
                await asyncio.gather(feed.task, return_exceptions=True)
                feed.task = None
        await self.flush()
        left = self.pending
        if left:
            log.error("audit trail closed with %d records unwritten", left)

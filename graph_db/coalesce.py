"""Batched reads of concurrent operations, coalesced into one statement.

A DataLoader batches the reads of one operation. Under a reconnect storm or a burst of HTTP
requests, hundreds of operations each send their own one-key statement: the driver spends
~1 ms of Python per statement, and the storm's subscribes were two such statements each (the
user, the access check). A coalescer sends a kind of read at once when it is idle; reads
asked for while `max_in_flight` of its statements are under way wait and go together in the
next one. Each caller gets the values of its own keys (matched by key, graph_db/batch.py), and
a read never joins a statement already sent, so it sees every write finished before it asked.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from graph_db.batch import unique

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Fetch = Callable[[Any, list[K]], Awaitable[Sequence[V]]]

MAX_IN_FLIGHT = 2
MAX_KEYS = 500  # per statement (a single caller's keys are never split)


class Coalescer(Generic[K, V]):
    def __init__(self, db: Any, fetch: Fetch[K, V], *, max_in_flight: int = MAX_IN_FLIGHT,
                 max_keys: int = MAX_KEYS) -> None:
        self.db = db
        self.fetch = fetch
        self.max_in_flight = max_in_flight
        self.max_keys = max_keys
        self.statements = 0  # sent, for tests and the bench
        self._pending: deque[tuple[list[K], asyncio.Future[list[V]]]] = deque()
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def load_many(self, keys: list[K]) -> list[V]:
        future: asyncio.Future[list[V]] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._scheduled or not self._pending or self._in_flight >= self.max_in_flight:
            return  # a statement that finishes schedules the next
        self._scheduled = True
        # On the next turn of the loop: the reads asked for in this one go together.
        asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        batch: list[tuple[list[K], asyncio.Future[list[V]]]] = []
        count = 0
        while self._pending and (not batch or count + len(self._pending[0][0]) <= self.max_keys):
            keys, future = self._pending.popleft()
            if not future.done():  # its caller went away meanwhile
                batch.append((keys, future))
                count += len(keys)
        if not batch:
            self._schedule()
            return
        self._in_flight += 1
        self.statements += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[list[K], asyncio.Future[list[V]]]]) -> None:
        try:
            keys = unique([k for ks, _ in batch for k in ks])
            found = dict(zip(keys, await self.fetch(self.db, keys), strict=True))
        except BaseException as exc:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:  # cancelled (the service stops): so are its callers
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
        else:
            for ks, future in batch:
                if not future.done():
                    future.set_result([found[k] for k in ks])
        finally:
            self._in_flight -= 1
            self._schedule()

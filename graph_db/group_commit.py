"""Group commit: a room's concurrent sends written together, in one transaction.

A room's writes queue on one lock (GraphDB.write's `serialize_on`: collisions on the room's
sequence would cost a rollback each), so one room took 1 / (write latency) messages a second
however many people typed in it: ~40/s here, and queueing made the p99 grow with every sender.
Now the sends that arrive while a room's write is under way wait together and go in the next
transaction, in arrival order, their seqs assigned in that order: a batch costs one BEGIN and
one COMMIT, and the queue drains as fast as it fills.

What a caller sees does not change:
- a send is acknowledged only once its transaction committed; a transaction that fails
  acknowledges none of its messages (each caller gets the error: SERVICE_UNAVAILABLE when
  the server went away, the commit's outcome then unknown);
- a send that fails for a reason of its own (a Cypher error on its content, a client key
  committed first by another process) cannot fail the others: the batch is then written
  again one send per transaction, each with its own outcome;
- a resend with the same clientMessageId returns the first message, also when both are in
  one batch (the transaction reads its own writes).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from graph_db.driver import DatabaseUnavailable, GraphDB, Tx
from graph_db.messages import NewMessage, Sent, send_in, send_message
from observability.metrics import SEND_GROUPS

log = logging.getLogger("collaboration.group_commit")

MAX_BATCH = 64  # sends per transaction: bounds a transaction's size and its retry's cost
# A group is held open until as many sends as the room's last group are in it, for at most a
# fraction of its last write's time: senders who were just answered are sending again, and
# without the hold each group took only those who arrived during the previous write (8
# senders in one room made groups of 2-3; the database's ceiling writes them 8 at a time).
HOLD_SHARE = 0.5
HOLD_MAX_S = 0.005
ROOMS_KEPT = 4096  # rooms whose last group size and write time are remembered


@dataclass
class _Pending:
    new: NewMessage
    answer: asyncio.Future[Sent | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit:
    def __init__(self, db: GraphDB, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queues: dict[str, list[_Pending]] = {}  # room id → sends not yet written
        self._writers: set[asyncio.Task[None]] = set()
        self._last: OrderedDict[str, tuple[int, float]] = OrderedDict()  # size, write seconds
        self._filling: dict[str, tuple[int, asyncio.Future[None]]] = {}  # held: target, wake
        self.batches = 0  # transactions written (tests and the bench read these)
        self.sent = 0

    async def send(self, new: NewMessage) -> Sent | None:
        """As graph_db.messages.send_message, written with the room's other pending sends."""
        pending = _Pending(new)
        queue = self._queues.get(new.room_id)
        if queue is None:
            self._queues[new.room_id] = [pending]
            # A task of its own: the first sender is answered with its batch, not after the
            # sends that arrive behind it.
            task = asyncio.create_task(self._drain(new.room_id))
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        else:
            queue.append(pending)
            filling = self._filling.get(new.room_id)
            if filling is not None and len(queue) >= filling[0] and not filling[1].done():
                filling[1].set_result(None)
        # Shielded: a caller that gives up (a timeout) does not cancel the others' write.
        return await asyncio.shield(pending.answer)

    async def _drain(self, room_id: str) -> None:
        queue = self._queues[room_id]
        batch: list[_Pending] = []
        try:
            while queue:
                await self._fill(room_id, queue)
                batch, queue[:] = queue[:self.max_batch], queue[self.max_batch:]
                started = asyncio.get_running_loop().time()
                await self._write(batch)
                self._remember(room_id, len(batch), asyncio.get_running_loop().time() - started)
        finally:
            del self._queues[room_id]
            # Cancelled (the process stopping): whoever still waits hears it, never hangs.
            for p in (*batch, *queue):
                _settle(p, error=DatabaseUnavailable("stopped before the write finished"))

    async def _fill(self, room_id: str, queue: list[_Pending]) -> None:
        """Holds the group open while it is smaller than the room's last one (HOLD_SHARE)."""
        size, took = self._last.get(room_id, (1, 0.0))
        target = min(size, self.max_batch)
        if len(queue) >= target:
            return
        wake = asyncio.get_running_loop().create_future()
        self._filling[room_id] = (target, wake)
        try:
            await asyncio.wait_for(wake, min(HOLD_MAX_S, took * HOLD_SHARE))
        except TimeoutError:
            pass
        finally:
            del self._filling[room_id]

    def _remember(self, room_id: str, size: int, took: float) -> None:
        self._last[room_id] = (size, took)
        self._last.move_to_end(room_id)
        if len(self._last) > ROOMS_KEPT:
            self._last.popitem(last=False)

    async def _write(self, batch: list[_Pending]) -> None:
        news = [p.new for p in batch]
        try:
            results = await self.db.write(lambda tx: _send_all(tx, news),
                                          serialize_on=news[0].room_id)
        except DatabaseUnavailable as exc:  # nobody's message is acknowledged
            for p in batch:
                _settle(p, error=exc)
            return
        except Exception as exc:  # one send's own failure: each on its own
            if len(batch) == 1:
                _settle(batch[0], error=exc)
                return
            log.debug("group of %d sends failed (%s); writing each alone", len(batch), exc)
            await asyncio.gather(*(self._alone(p) for p in batch))
            return
        self.batches += 1
        self.sent += len(batch)
        SEND_GROUPS.observe(len(batch))
        for p, result in zip(batch, results, strict=True):
            _settle(p, result=result)

    async def _alone(self, pending: _Pending) -> None:
        try:
            _settle(pending, result=await send_message(self.db, pending.new))
        except Exception as exc:  # handed to its caller
            _settle(pending, error=exc)

    async def close(self) -> None:
        """Waits for the writes under way (the lifespan's end: acknowledged means stored)."""
        if self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)


async def _send_all(tx: Tx, news: list[NewMessage]) -> list[Sent | None]:
    return [await send_in(tx, new) for new in news]


def _settle(pending: _Pending, *, result: Sent | None = None,
            error: BaseException | None = None) -> None:
    if pending.answer.done():
        return
    if error is not None:
        pending.answer.set_exception(error)
    else:
        pending.answer.set_result(result)

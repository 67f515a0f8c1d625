"""One loop timer for many deadlines (each socket's token expiry).

A `call_later` per socket costs a TimerHandle, a libuv timer, a copy of the context and the
closure it calls, for hours; here a deadline is a heap entry and a dict entry, and one timer
is armed for the earliest. Callbacks run in an empty context: a deadline must not run with
the log fields of whichever socket happened to arm the timer.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import math
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)
# A timer may fire a little before its time (the loop's clock resolution): what is due
# within this is run, not re-armed for a fraction of a millisecond.
SLACK_S = 0.001
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary())


class Deadlines:
    """Callbacks at loop times (`loop.time()`), cancellable by the key `add` returns."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._due: dict[int, Callable[[], None]] = {}
        self._keys = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf

    def __len__(self) -> int:
        return len(self._due)

    def add(self, when: float, callback: Callable[[], None]) -> int:
        key = next(self._keys)
        self._due[key] = callback
        heapq.heappush(self._heap, (when, key))
        if when < self._armed_for:
            self._arm(when)
        return key

    def cancel(self, key: int) -> None:
        if self._due.pop(key, None) is None:
            return
        # Cancelled entries stay in the heap until their time; past half of it, it is
        # rebuilt, so sockets that come and go do not pile up entries for hours.
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [entry for entry in self._heap if entry[1] in self._due]
            heapq.heapify(self._heap)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = when
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(when, self._fire, context=contextvars.Context())

    def _fire(self) -> None:
        self._timer, self._armed_for = None, math.inf
        now = asyncio.get_running_loop().time() + SLACK_S
        heap = self._heap
        while heap and heap[0][0] <= now:
            callback = self._due.pop(heapq.heappop(heap)[1], None)
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.exception("deadline callback failed")
        while heap and heap[0][1] not in self._due:
            heapq.heappop(heap)  # cancelled: no timer for them
        if heap:
            self._arm(heap[0][0])


def deadlines() -> Deadlines:
    """The running loop's deadlines."""
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = Deadlines()
    return found

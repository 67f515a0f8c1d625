"""Rate limits: RATE_LIMIT_REQUESTS operations per RATE_LIMIT_PERIOD seconds per caller (the
token's user; the client address before authentication), over HTTP and WebSocket alike, in
one moving window. Operations weigh 1, the expensive mutations more (transport/limits.py
WEIGHTS).

The budget is a port: in process (MemoryBudget), or in Redis through the `limits` library
(RedisBudget: one budget for every instance). A caller once refused is remembered here until
its retry time, so a flood from it costs neither a Redis round trip nor parsing.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from typing import Protocol

from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool

from observability.metrics import rate_limited
from resolvers.errors import ServiceError, is_unavailable

log = logging.getLogger(__name__)
KEY_PREFIX = "collab:rate"
_REMEMBERED_MAX = 100_000  # refused callers remembered at once (each only until its retry)


class RateLimited(ServiceError):
    code = "RATE_LIMITED"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many operations: retry in {retry_after} s",
                         retryAfter=retry_after)
        self.retry_after = retry_after


class RateBudget(Protocol):
    async def take(self, key: str, cost: int) -> float | None:
        """Takes `cost` from `key`'s budget: None when it could, else the seconds until it
        can (at least)."""

    async def aclose(self) -> None: ...


class MemoryBudget:
    """A moving window per key: the times of its last `requests` hits. Keys are kept in order
    of last use, so those idle for a whole period are dropped from the front as others come.
    (Not limits' MemoryStorage: its expiry sweep visits every key, each through a thread,
    after every hit.)"""

    def __init__(self, requests: int, period: float) -> None:
        self.requests = requests
        self.period = period
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    async def take(self, key: str, cost: int) -> float | None:
        now = time.monotonic()
        self._forget_idle(now)
        hits = self._hits.setdefault(key, deque(maxlen=self.requests))
        self._hits.move_to_end(key)
        start = now - self.period
        while hits and hits[0] <= start:
            hits.popleft()
        if len(hits) + cost > self.requests:
            # The hit that must leave the window for `cost` to fit.
            return hits[len(hits) + cost - self.requests - 1] + self.period - now
        hits.extend([now] * cost)
        return None

    def _forget_idle(self, now: float) -> None:
        while self._hits:
            key, hits = next(iter(self._hits.items()))
            if hits and hits[-1] > now - self.period:
                return
            del self._hits[key]

    def __len__(self) -> int:
        return len(self._hits)

    async def aclose(self) -> None:
        self._hits.clear()


class RedisBudget:
    """The same window in Redis (limits' moving window, a Lua script per hit): one budget per
    caller across every instance. Its retry time is when the oldest hit leaves the window."""

    def __init__(self, pool: ConnectionPool, url: str, requests: int, period: int) -> None:
        self.item = RateLimitItemPerSecond(requests, period)
        # limits passes its options on to redis-py (typed loosely): our pool, closed by app.py.
        self.storage = RedisStorage(f"async+{url}", implementation="redispy",
                                    key_prefix=KEY_PREFIX,
                                    connection_pool=pool)  # type: ignore[arg-type]
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def take(self, key: str, cost: int) -> float | None:
        if await self.limiter.hit(self.item, key, cost=cost):
            return None
        stats = await self.limiter.get_window_stats(self.item, key)
        return stats.reset_time - time.time()

    async def aclose(self) -> None:
        return None  # the pool belongs to whoever made it (app.py)


class RateLimiter:
    def __init__(self, budget: RateBudget, requests: int) -> None:
        self.budget = budget
        self.requests = requests
        # key -> (monotonic time it may retry, the cost it was refused)
        self._refused: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._outage_logged = 0.0

    def refused(self, key: str, cost: int = 1) -> RateLimited | None:
        """Refused a moment ago at this cost or less, and not retryable yet: answered
        without asking the budget."""
        found = self._refused.get(key)
        if found is None:
            return None
        until, refused_cost = found
        left = until - time.monotonic()
        if left <= 0:
            del self._refused[key]
            return None
        if cost < refused_cost:
            return None
        rate_limited("operations")  # each RateLimited made is one refusal answered
        return RateLimited(max(1, math.ceil(left)))

    async def charge(self, key: str, cost: int) -> None:
        """Takes `cost` operations from `key`'s budget; RateLimited when it cannot."""
        cost = min(cost, self.requests)
        refusal = self.refused(key, cost)
        if refusal is None:
            retry_after = await self._take(key, cost)
            if retry_after is None:
                return
            refusal = self._remember(key, cost, retry_after)
        raise refusal

    async def _take(self, key: str, cost: int) -> float | None:
        try:
            return await self.budget.take(key, cost)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Redis unreachable: serve rather than refuse everyone (logged once a minute).
            if time.monotonic() - self._outage_logged > 60:
                self._outage_logged = time.monotonic()
                log.warning("rate limits: Redis unreachable, not enforced meanwhile (%s)",
                            exc)
            return None

    def _remember(self, key: str, cost: int, retry_after: float) -> RateLimited:
        self._refused[key] = (time.monotonic() + retry_after, cost)
        self._refused.move_to_end(key)
        while len(self._refused) > _REMEMBERED_MAX:
            self._refused.popitem(last=False)
        rate_limited("operations")
        return RateLimited(max(1, math.ceil(retry_after)))

    async def aclose(self) -> None:
        await self.budget.aclose()

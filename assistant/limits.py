"""The assistant's quotas: answers per user and per room in a moving window, one answer in
flight per user per room, a cap on answers streaming at once, and a daily token budget per room.

admit() checks everything and takes everything, or takes nothing and raises QuotaRefused;
finish() gives the slots back and settles the budget (the estimate reserved at admit() against
the tokens really used). Checks, in order (the longest typical wait first, so the retryAfter
given is rarely followed by a refusal for another reason): the room's daily tokens, the user's
rate, the room's rate, the user's answer in flight in that room, the concurrency cap.

Rates are a moving window log (the times of the last `requests` admits), as transport/rate_limit.py:
exact, and its retryAfter is when the hit that must leave the window leaves it.

In process (MemoryQuotas, REDIS_URL unset): dicts, no await inside a check, so each admit() is
atomic by construction. In Redis (RedisQuotas): one Lua script per admit() and per finish(), so
atomic across instances. Held slots are leases (a sorted set of reply id -> expiry): those of an
instance that died mid-answer stop counting after `lease_s`. Redis times are the instances'
wall clocks (NTP keeps them within milliseconds, far below these windows), so tests can drive
them; the UTC day is taken from the same clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as day_start
from typing import Any, NamedTuple, Protocol

from redis.asyncio import Redis

log = logging.getLogger(__name__)

RATE_LIMITED = "AI_RATE_LIMITED"
BUDGET_EXCEEDED = "AI_BUDGET_EXCEEDED"
# Hints, not measurements: answers take seconds, and a slot's holder cannot be predicted.
IN_FLIGHT_RETRY_S = 3.0
CONCURRENCY_RETRY_S = 2.0
TOKENS_TTL_S = 2 * 86_400  # a day's counter outlives its day, for finishes just after midnight


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    user_requests: int = 10  # per user (across rooms) ...
    user_period_s: float = 600  # ... per 10 minutes
    room_requests: int = 30  # per room ...
    room_period_s: float = 600
    max_concurrency: int = 4  # answers streaming at once (across instances when shared)
    room_daily_tokens: int = 200_000  # per room per UTC day (0 = unlimited)

    def __post_init__(self) -> None:
        if min(self.user_requests, self.room_requests, self.max_concurrency) < 1:
            raise ValueError("quota counts must be at least 1")
        if min(self.user_period_s, self.room_period_s) <= 0 or self.room_daily_tokens < 0:
            raise ValueError("quota periods must be positive, daily tokens not negative")


class QuotaRefused(Exception):
    """code: AI_RATE_LIMITED (reason user_rate, room_rate, in_flight, concurrency) or
    AI_BUDGET_EXCEEDED (reason daily_tokens); retry_after: seconds (> 0), until the next UTC
    midnight for daily_tokens, a short hint for in_flight and concurrency."""

    def __init__(self, code: str, reason: str, retry_after: float) -> None:
        super().__init__(f"{code} ({reason}): retry in {retry_after:.1f} s")
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


def refusal(reason: str, retry_after: float) -> QuotaRefused:
    code = BUDGET_EXCEEDED if reason == "daily_tokens" else RATE_LIMITED
    return QuotaRefused(code, reason, max(retry_after, 0.001))


@dataclass(frozen=True, slots=True)
class Grant:
    """What admit() took; pass it back to finish()."""

    user_id: str
    room_id: str
    reply_id: str
    reserved_tokens: int
    day: str  # the UTC day (YYYY-MM-DD) the reservation was charged to


class Quotas(Protocol):
    async def admit(self, user_id: str, room_id: str, reply_id: str,
                    estimate_tokens: int) -> Grant: ...
    async def finish(self, grant: Grant, used_tokens: int) -> None: ...
    async def used_today(self, room_id: str) -> int: ...
    async def aclose(self) -> None: ...
    def sizes(self) -> dict[str, int]: ...


def utc_day(moment: datetime) -> tuple[str, float]:
    """The UTC day of `moment`, and the seconds left in it."""
    moment = moment.astimezone(UTC)
    midnight = datetime.combine(moment.date() + timedelta(days=1), day_start(), UTC)
    return moment.date().isoformat(), (midnight - moment).total_seconds()


def wall_now() -> datetime:
    return datetime.now(UTC)


class _Windows:
    """A moving window log per key. Keys are kept in order of their last hit, so those idle
    for a whole period are dropped from the front (the map drains when callers go idle)."""

    def __init__(self, requests: int, period: float) -> None:
        self.requests = requests
        self.period = period
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        """0 when a hit fits now, else the seconds until one does."""
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        while hits and hits[0] <= now - self.period:
            hits.popleft()
        if len(hits) < self.requests:
            return 0.0
        return hits[len(hits) - self.requests] + self.period - now

    def hit(self, key: str, now: float) -> None:
        self._hits.setdefault(key, deque(maxlen=self.requests)).append(now)
        self._hits.move_to_end(key)

    def prune(self, now: float) -> None:
        while self._hits:
            hits = next(iter(self._hits.values()))
            if hits and hits[-1] > now - self.period:
                return
            self._hits.popitem(last=False)

    def __len__(self) -> int:
        return len(self._hits)


class _Lease(NamedTuple):
    user_id: str
    room_id: str
    expiry: float


class MemoryQuotas:
    """One process. `clock` (monotonic seconds) times the windows and leases, `wall` (aware
    datetime) gives the UTC day."""

    def __init__(self, config: QuotaConfig, *, lease_s: float = 180.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = wall_now) -> None:
        self.config = config
        self.lease_s = lease_s
        self.clock = clock
        self.wall = wall
        self._users = _Windows(config.user_requests, config.user_period_s)
        self._rooms = _Windows(config.room_requests, config.room_period_s)
        # reply id -> lease: at most max_concurrency live ones (expired ones pruned first).
        self._held: dict[str, _Lease] = {}
        self._day = ""
        self._tokens: dict[str, int] = {}  # room -> tokens used on self._day

    async def admit(self, user_id: str, room_id: str, reply_id: str,
                    estimate_tokens: int) -> Grant:
        now = self.clock()
        day, to_midnight = utc_day(self.wall())
        self._prune(now, day)
        estimate = max(0, estimate_tokens)
        refused = self._check(user_id, room_id, estimate, now, to_midnight)
        if refused is not None:
            raise refused
        self._users.hit(user_id, now)
        self._rooms.hit(room_id, now)
        self._held[reply_id] = _Lease(user_id, room_id, now + self.lease_s)
        self._charge(room_id, day, estimate)
        return Grant(user_id, room_id, reply_id, estimate, day)

    def _check(self, user_id: str, room_id: str, estimate: int, now: float,
               to_midnight: float) -> QuotaRefused | None:
        limit = self.config.room_daily_tokens
        if limit and self._tokens.get(room_id, 0) + estimate > limit:
            return refusal("daily_tokens", to_midnight)
        for reason, windows, key in (("user_rate", self._users, user_id),
                                     ("room_rate", self._rooms, room_id)):
            wait = windows.wait(key, now)
            if wait > 0:
                return refusal(reason, wait)
        if any(lease[:2] == (user_id, room_id) for lease in self._held.values()):
            return refusal("in_flight", IN_FLIGHT_RETRY_S)
        if len(self._held) >= self.config.max_concurrency:
            return refusal("concurrency", CONCURRENCY_RETRY_S)
        return None

    async def finish(self, grant: Grant, used_tokens: int) -> None:
        lease = self._held.pop(grant.reply_id, None)
        # Settled once; and not after its lease lapsed (the estimate stays charged: an answer
        # outliving its lease outlived the call's deadline, its usage is not to be trusted).
        if lease is not None and lease.expiry > self.clock():
            self._charge(grant.room_id, grant.day, max(0, used_tokens) - grant.reserved_tokens)

    def _charge(self, room_id: str, day: str, tokens: int) -> None:
        if day != self._day:
            return  # a past day's budget (already forgotten) no longer limits anyone
        used = max(0, self._tokens.get(room_id, 0) + tokens)
        if used:
            self._tokens[room_id] = used
        else:
            self._tokens.pop(room_id, None)

    def _prune(self, now: float, day: str) -> None:
        self._users.prune(now)
        self._rooms.prune(now)
        for reply_id in [r for r, lease in self._held.items() if lease.expiry <= now]:
            del self._held[reply_id]
        if day != self._day:
            self._day = day
            self._tokens.clear()

    async def used_today(self, room_id: str) -> int:
        self._prune(self.clock(), utc_day(self.wall())[0])
        return self._tokens.get(room_id, 0)

    def sizes(self) -> dict[str, int]:
        """Entries per map, pruned first: windows drain a period after their last admit, leases
        on finish (or expiry), room token counts at the next UTC midnight."""
        self._prune(self.clock(), utc_day(self.wall())[0])
        return {"assistant.user_rates": len(self._users),
                "assistant.room_rates": len(self._rooms),
                "assistant.held": len(self._held), "assistant.room_tokens": len(self._tokens)}

    async def aclose(self) -> None:
        self._held.clear()


# KEYS: user hits, room hits, the (room, user) answer in flight, every answer in flight, the
# room's tokens of the day. ARGV: see RedisQuotas._admit_args. Returns {reason, wait}, reason
# "" when admitted. Waits are strings: Lua numbers come back truncated to integers.
_ADMIT = """
local now = tonumber(ARGV[1])
local function wait(key, limit, period)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  local n = redis.call('ZCARD', key)
  if n < limit then return 0 end
  local hit = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  return tonumber(hit[2]) + period - now
end
local function full(key, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZCARD', key) >= limit
end
local estimate, daily = tonumber(ARGV[10]), tonumber(ARGV[11])
if daily > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') + estimate > daily then
  return {'daily_tokens', ARGV[12]}
end
local w = wait(KEYS[1], tonumber(ARGV[4]), tonumber(ARGV[5]))
if w > 0 then return {'user_rate', tostring(w)} end
w = wait(KEYS[2], tonumber(ARGV[6]), tonumber(ARGV[7]))
if w > 0 then return {'room_rate', tostring(w)} end
if full(KEYS[3], 1) then return {'in_flight', '0'} end
if full(KEYS[4], tonumber(ARGV[8])) then return {'concurrency', '0'} end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[5])) + 1)
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[7])) + 1)
for i = 3, 4 do
  redis.call('ZADD', KEYS[i], ARGV[9], ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[14])
end
redis.call('INCRBY', KEYS[5], ARGV[10])
redis.call('EXPIRE', KEYS[5], ARGV[13])
return {'', '0'}
"""

# KEYS: the (room, user) answer in flight, every answer in flight, the grant's day's tokens.
# ARGV: reply id, now, tokens to add (negative: refund). The busy set's member is the grant's
# mark: settled once, and not once its lease lapsed (as in MemoryQuotas.finish).
_FINISH = """
local expiry = redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if expiry and tonumber(expiry) > tonumber(ARGV[2]) and redis.call('EXISTS', KEYS[3]) == 1 then
  if redis.call('INCRBY', KEYS[3], ARGV[3]) < 0 then redis.call('SET', KEYS[3], 0, 'KEEPTTL') end
end
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisQuotas:
    """Shared by every instance. Keys under `prefix`: user:<id> and room:<id> (admit times),
    flight:<room>:<user> and busy (reply id -> lease expiry), tokens:<room>:<day>. Room ids
    are UUIDs (no ':'), so flight keys cannot collide whatever the user ids hold. `clock` is
    wall-clock epoch seconds, the same on every instance."""

    def __init__(self, redis: Redis, config: QuotaConfig, *, prefix: str = "collab:ai:",
                 lease_s: float = 180.0, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.config = config
        self.prefix = prefix
        self.lease_s = lease_s
        self.clock = clock
        self._admit = redis.register_script(_ADMIT)
        self._finish = redis.register_script(_FINISH)
        self._tasks: set[asyncio.Task[None]] = set()  # releases of cancelled admits

    def _keys(self, user_id: str, room_id: str, day: str) -> list[str]:
        p = self.prefix
        return [f"{p}user:{user_id}", f"{p}room:{room_id}", f"{p}flight:{room_id}:{user_id}",
                f"{p}busy", f"{p}tokens:{room_id}:{day}"]

    def _admit_args(self, grant: Grant, now: float, to_midnight: float) -> list[str | int]:
        c = self.config
        hit = f"{grant.reply_id}:{now!r}"  # unique even if a reply id comes back
        return [repr(now), hit, grant.reply_id, c.user_requests, repr(c.user_period_s),
                c.room_requests, repr(c.room_period_s), c.max_concurrency,
                repr(now + self.lease_s), grant.reserved_tokens, c.room_daily_tokens,
                repr(to_midnight), TOKENS_TTL_S, math.ceil(self.lease_s) + 1]

    async def admit(self, user_id: str, room_id: str, reply_id: str,
                    estimate_tokens: int) -> Grant:
        now = self.clock()
        day, to_midnight = utc_day(datetime.fromtimestamp(now, UTC))
        grant = Grant(user_id, room_id, reply_id, max(0, estimate_tokens), day)
        call = asyncio.ensure_future(self._admit(keys=self._keys(user_id, room_id, day),
                                                 args=self._admit_args(grant, now, to_midnight)))
        try:
            reason, wait = await asyncio.shield(call)
        except asyncio.CancelledError:
            # The script may have taken the slots already: give them back once it is done,
            # rather than hold the user's slot in this room for a whole lease.
            self._spawn(self._release(call, grant))
            raise
        if _text(reason):
            raise refusal(_text(reason), float(_text(wait)) or self._hint(_text(reason)))
        return grant

    @staticmethod
    def _hint(reason: str) -> float:
        return IN_FLIGHT_RETRY_S if reason == "in_flight" else CONCURRENCY_RETRY_S

    async def finish(self, grant: Grant, used_tokens: int) -> None:
        keys = self._keys(grant.user_id, grant.room_id, grant.day)[2:]
        args: list[str | int] = [grant.reply_id, repr(self.clock()),
                max(0, used_tokens) - grant.reserved_tokens]
        # Shielded: a caller cancelled while finishing must not leave its slots held.
        await asyncio.shield(self._finish(keys=keys, args=args))

    async def _release(self, admitting: asyncio.Future[Any], grant: Grant) -> None:
        await asyncio.wait([admitting])  # taken or refused alike: finishing is harmless
        try:
            await self.finish(grant, 0)
        except Exception:
            log.warning("assistant quotas: releasing a cancelled admit failed; its lease "
                        "expires", exc_info=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def used_today(self, room_id: str) -> int:
        day, _ = utc_day(datetime.fromtimestamp(self.clock(), UTC))
        used = await self.redis.get(f"{self.prefix}tokens:{room_id}:{day}")
        return int(_text(used)) if used is not None else 0

    def sizes(self) -> dict[str, int]:
        return {"assistant.releases": len(self._tasks)}

    async def aclose(self) -> None:
        """Waits for pending releases; the Redis client belongs to whoever made it."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

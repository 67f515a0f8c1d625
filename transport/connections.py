"""WS_MAX_CONNECTIONS: open WebSockets per user. Counted in process, or in Redis across every
instance (REDIS_URL): a sorted set per user of `instance:connection` scored by expiry, which
each instance refreshes for its own sockets every heartbeat, so the sockets of a crashed
instance stop counting after `ttl`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from typing import Protocol

from redis.asyncio import Redis

from resolvers.errors import is_unavailable

log = logging.getLogger(__name__)
KEY = "collab:ws:user:{}"

# Admits a connection only while the user has fewer than the limit (expired ones pruned).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class ConnectionSlots(Protocol):
    async def acquire(self, user_id: str, connection_id: str) -> bool: ...
    async def release(self, user_id: str, connection_id: str) -> None: ...
    async def refresh(self) -> None: ...


class MemorySlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        # A list per user (a few sockets each; a set of one costs three times as much).
        self._open: dict[str, list[str]] = {}

    async def acquire(self, user_id: str, connection_id: str) -> bool:
        mine = self._open.setdefault(user_id, [])
        if len(mine) >= self.limit:
            return False
        mine.append(connection_id)
        return True

    async def release(self, user_id: str, connection_id: str) -> None:
        mine = self._open.get(user_id)
        if mine is not None:
            if connection_id in mine:
                mine.remove(connection_id)
            if not mine:
                del self._open[user_id]

    async def refresh(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._open)


class RedisSlots:
    def __init__(self, redis: Redis, limit: int, ttl: float) -> None:
        self.redis = redis
        self.limit = limit
        self.ttl = ttl
        self.instance = uuid.uuid4().hex[:12]
        self._local = MemorySlots(limit)  # this instance's own, to refresh them
        self._acquire = redis.register_script(_ACQUIRE)

    async def acquire(self, user_id: str, connection_id: str) -> bool:
        now = time.time()
        admitted = await self._acquire(
            keys=[KEY.format(user_id)],
            args=[f"{self.instance}:{connection_id}", now, now + self.ttl, self.limit,
                  math.ceil(self.ttl) + 1])
        if admitted:
            await self._local.acquire(user_id, connection_id)
        return bool(admitted)

    async def release(self, user_id: str, connection_id: str) -> None:
        await self._local.release(user_id, connection_id)
        await self.redis.zrem(KEY.format(user_id), f"{self.instance}:{connection_id}")

    async def refresh(self) -> None:
        expiry = time.time() + self.ttl
        pipe = self.redis.pipeline(transaction=False)
        for user_id, connections in self._local._open.items():
            key = KEY.format(user_id)
            pipe.zadd(key, {f"{self.instance}:{c}": expiry for c in connections}, xx=True)
            pipe.expire(key, math.ceil(self.ttl) + 1)
        await pipe.execute()


class ConnectionLimiter:
    """Admits sockets per user; with Redis unreachable, admits them (logged)."""

    def __init__(self, slots: ConnectionSlots, limit: int, refresh_every: float) -> None:
        self.slots = slots
        self.limit = limit
        self.refresh_every = refresh_every
        self._task: asyncio.Task[None] | None = None

    async def acquire(self, user_id: str) -> str | None:
        """The connection's id while it counts against the user's limit; None: refused."""
        connection_id = uuid.uuid4().hex
        try:
            admitted = await self.slots.acquire(user_id, connection_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("connection limits: Redis unreachable, socket admitted (%s)", exc)
            return connection_id
        return connection_id if admitted else None

    async def release(self, user_id: str, connection_id: str) -> None:
        try:
            await self.slots.release(user_id, connection_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("connection limits: Redis unreachable; the entry expires (%s)", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh(), name="connection-limits")

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_every)
            try:
                await self.slots.refresh()
            except Exception:
                log.warning("connection limits: refresh failed", exc_info=True)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

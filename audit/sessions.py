"""Which sessions (tokens) were seen before: the audit trail records a session's first use.

A session is the fingerprint of its token (auth.Claims.session), never the token. Known ones
are kept per process (bounded); with Redis, one SET NX per session and process tells every
instance's first use from the rest, so a session starts once in the trail across instances.
"""

from __future__ import annotations

import collections
import logging
from datetime import UTC, datetime
from typing import Protocol

from redis.asyncio import Redis

log = logging.getLogger(__name__)
KNOWN_MAX = 100_000
PREFIX = "audit:session:"


class SessionLedger(Protocol):
    async def first_use(self, session: str, expires_at: datetime) -> bool: ...
    async def aclose(self) -> None: ...


class _Known:
    def __init__(self) -> None:
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    def seen(self, session: str) -> bool:
        if session in self._seen:
            self._seen.move_to_end(session)
            return True
        self._seen[session] = None
        if len(self._seen) > KNOWN_MAX:
            self._seen.popitem(last=False)
        return False


class MemorySessions:
    def __init__(self) -> None:
        self._known = _Known()

    async def first_use(self, session: str, expires_at: datetime) -> bool:
        return not self._known.seen(session)

    async def aclose(self) -> None:
        return None


class RedisSessions:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._known = _Known()

    async def first_use(self, session: str, expires_at: datetime) -> bool:
        if self._known.seen(session):
            return False
        ttl = max(int((expires_at - datetime.now(UTC)).total_seconds()), 1)
        try:
            return bool(await self.redis.set(PREFIX + session, 1, nx=True, ex=ttl))
        except Exception:  # Redis away: this process's first use is recorded instead
            log.warning("session ledger: Redis unreachable", exc_info=True)
            return True

    async def aclose(self) -> None:
        await self.redis.aclose()

"""Who is online: a user is online in a room while at least one of their sockets subscribes
to it (in any process), offline once the last one is gone for a short grace period."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from redis.asyncio import Redis

from realtime.tasks import spawn

log = logging.getLogger(__name__)
Announce = Callable[[str, str, bool], Awaitable[None]]  # (room, user, online)


class PresenceStore(Protocol):
    """Where processes record their sockets; answers "is anyone's socket there?"."""

    async def add(self, room_id: str, user_id: str) -> None: ...
    async def remove(self, room_id: str, user_id: str, *, user_gone: bool) -> bool:
        """Forgets this process's (room, user); with `user_gone`, also that the user is
        online here at all. True when no process has the user in the room any more."""
    async def online(self, keys: list[tuple[str, str]]) -> list[bool]: ...
    async def online_users(self, user_ids: list[str]) -> list[bool]: ...
    async def refresh(self, pairs: list[tuple[str, str]]) -> None: ...


class MemoryPresence:
    def __init__(self) -> None:
        self._pairs: set[tuple[str, str]] = set()

    async def add(self, room_id: str, user_id: str) -> None:
        self._pairs.add((room_id, user_id))

    async def remove(self, room_id: str, user_id: str, *, user_gone: bool) -> bool:
        self._pairs.discard((room_id, user_id))
        return True

    async def online(self, keys: list[tuple[str, str]]) -> list[bool]:
        return [k in self._pairs for k in keys]

    async def online_users(self, user_ids: list[str]) -> list[bool]:
        users = {u for _, u in self._pairs}
        return [u in users for u in user_ids]

    async def refresh(self, pairs: list[tuple[str, str]]) -> None:
        return None


class RedisPresence:
    """Sorted sets scored by expiry: `presence:room:{room}` holds `user|instance` members,
    `presence:user:{user}` the instances the user is connected to. A process removes its own
    entries when a user's last socket goes (after the grace period); a crashed process's
    entries stop counting after `ttl` and are pruned by the next refresh of that key; every
    key expires `ttl` after its last refresh, so nothing outlives the processes that wrote
    it."""

    def __init__(self, redis: Redis, ttl: float) -> None:
        self.redis = redis
        self.ttl = ttl
        self.key_ttl = math.ceil(ttl) + 1
        self.instance = uuid.uuid4().hex[:12]

    def _member(self, user_id: str) -> str:
        return f"{user_id}|{self.instance}"

    async def add(self, room_id: str, user_id: str) -> None:
        await self.refresh([(room_id, user_id)])

    async def refresh(self, pairs: list[tuple[str, str]]) -> None:
        if not pairs:
            return
        now = time.time()
        expiry = now + self.ttl
        entries: dict[str, dict[str, float]] = {}
        for room_id, user_id in pairs:
            entries.setdefault(f"presence:room:{room_id}", {})[self._member(user_id)] = expiry
            entries.setdefault(f"presence:user:{user_id}", {})[self.instance] = expiry
        pipe = self.redis.pipeline(transaction=False)
        for key, members in entries.items():
            pipe.zadd(key, members)
            pipe.zremrangebyscore(key, "-inf", now)  # crashed processes' leftovers
            pipe.expire(key, self.key_ttl)
        await pipe.execute()

    async def remove(self, room_id: str, user_id: str, *, user_gone: bool) -> bool:
        key = f"presence:room:{room_id}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(key, self._member(user_id))
        if user_gone:
            pipe.zrem(f"presence:user:{user_id}", self.instance)
        pipe.zrangebyscore(key, time.time(), "+inf")
        others = (await pipe.execute())[-1]
        return not any(_user_of(m) == user_id for m in others)

    async def online(self, keys: list[tuple[str, str]]) -> list[bool]:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for room_id, _ in keys:
            pipe.zrangebyscore(f"presence:room:{room_id}", now, "+inf")
        results = await pipe.execute()
        return [any(_user_of(m) == user for m in members)
                for (_, user), members in zip(keys, results, strict=True)]

    async def online_users(self, user_ids: list[str]) -> list[bool]:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.zcount(f"presence:user:{user_id}", now, "+inf")
        return [bool(n) for n in await pipe.execute()]


def _user_of(member: object) -> str:
    text = member.decode() if isinstance(member, bytes) else str(member)
    return text.rsplit("|", 1)[0]


class Presence:
    """This process's sockets per (room, user), mirrored into a store, with a grace period
    so a reconnecting client does not flicker offline."""

    def __init__(self, store: PresenceStore, announce: Announce, *, grace: float) -> None:
        self.store = store
        self.announce = announce
        self.grace = grace
        self._local: Counter[tuple[str, str]] = Counter()
        self._leaving: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # Per user: how many of their (room, user) pairs are in _local or _leaving, so the
        # last one to go also takes the user's "online here" entry with it.
        self._pairs_of_user: Counter[str] = Counter()
        # Told once a user has no socket left in this process (email digests: "no live
        # connection since"), not once per room they were in.
        self.on_offline: list[Callable[[str], Coroutine[Any, Any, None]]] = []

    async def join(self, room_id: str, user_id: str) -> None:
        key = (room_id, user_id)
        self._local[key] += 1
        pending = self._leaving.pop(key, None)
        if pending is not None:
            pending.cancel()  # came back within the grace period: never went offline
            return
        if self._local[key] == 1:
            self._pairs_of_user[user_id] += 1
            was_online = (await self.store.online([key]))[0]
            await self.store.add(room_id, user_id)
            if not was_online:
                await self.announce(room_id, user_id, True)

    def leave(self, room_id: str, user_id: str) -> None:
        key = (room_id, user_id)
        self._local[key] -= 1
        if self._local[key] > 0:
            return
        del self._local[key]
        loop = asyncio.get_running_loop()
        self._leaving[key] = loop.call_later(
            self.grace, lambda: spawn(self._gone(key)))

    async def _gone(self, key: tuple[str, str]) -> None:
        self._leaving.pop(key, None)
        if self._local.get(key):
            return
        user_id = key[1]
        self._pairs_of_user[user_id] -= 1
        user_gone = self._pairs_of_user[user_id] <= 0
        if user_gone:
            del self._pairs_of_user[user_id]
        try:
            if await self.store.remove(*key, user_gone=user_gone):
                await self.announce(key[0], key[1], False)
                if user_gone:
                    for hook in self.on_offline:
                        spawn(hook(user_id))
        except Exception:
            log.warning("presence update for %s failed", key, exc_info=True)

    async def heartbeat(self) -> None:
        """Keeps this process's entries alive in a shared store."""
        await self.store.refresh([*self._local.keys(), *self._leaving.keys()])

    async def online(self, keys: list[tuple[str, str]]) -> list[bool]:
        return await self.store.online(keys)

    async def online_users(self, user_ids: list[str]) -> list[bool]:
        return await self.store.online_users(user_ids)

    def sizes(self) -> dict[str, int]:
        """How many entries each of this process's maps holds (tests check they drain)."""
        return {"presence.local": len(self._local), "presence.leaving": len(self._leaving),
                "presence.users": len(self._pairs_of_user)}

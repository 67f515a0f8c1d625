"""Per-key pub/sub channels with a local fan-out: each key (a user, a room and user) is one
channel, subscribed once per process however many of this process's subscriptions follow
it; each subscription reads its own bounded queue, in the order the publisher's instance
published."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from realtime.pubsub import PubSub

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
QUEUE_MAX = 512  # a subscription this far behind is not reading any more


class Channels(Generic[K, T]):
    def __init__(self, pubsub: PubSub, name: Callable[[K], str],
                 decode: Callable[[bytes], T]) -> None:
        self.pubsub, self._name, self._decode = pubsub, name, decode
        self._queues: dict[K, set[asyncio.Queue[T]]] = {}
        self._locks: dict[K, asyncio.Lock] = {}

    async def publish(self, key: K, raw: bytes) -> None:
        await self.pubsub.publish(self._name(key), raw)

    async def open(self, key: K) -> asyncio.Queue[T]:
        queue: asyncio.Queue[T] = asyncio.Queue(QUEUE_MAX)
        async with self._lock(key):
            queues = self._queues.get(key)
            if queues is None:
                queues = self._queues[key] = set()
                await self.pubsub.subscribe(self._name(key), self._handler(key))
            queues.add(queue)
        return queue

    async def close(self, key: K, queue: asyncio.Queue[T]) -> None:
        async with self._lock(key):
            queues = self._queues.get(key)
            if queues is None:
                return
            queues.discard(queue)
            if not queues:
                del self._queues[key]
                await self.pubsub.unsubscribe(self._name(key))
        if key not in self._queues and not self._locks[key].locked():
            self._locks.pop(key, None)

    def _lock(self, key: K) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _handler(self, key: K):  # type: ignore[no-untyped-def]
        async def deliver(raw: bytes) -> None:
            item = self._decode(raw)
            for queue in list(self._queues.get(key, ())):
                try:
                    queue.put_nowait(item)
                except asyncio.QueueFull:
                    log.warning("%s: dropped, the subscription is not reading", self._name(key))

        return deliver

    def __contains__(self, key: object) -> bool:
        """The key has a subscription in this process."""
        return key in self._queues

    def keys(self) -> list[K]:
        return list(self._queues)

    def sizes(self, prefix: str) -> dict[str, int]:
        return {f"{prefix}.channels": len(self._queues), f"{prefix}.locks": len(self._locks)}

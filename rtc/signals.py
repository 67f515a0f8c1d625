"""WebRTC signals: addressed to one user of one room, never stored, never in roomEvents (an
SDP carries the sender's addresses). Each (room, user) is one pub/sub channel, subscribed
once per process however many of the user's sockets follow it; delivered in the order the
sender's instance published them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from realtime.pubsub import PubSub

log = logging.getLogger(__name__)
QUEUE_MAX = 512  # a socket this far behind on signals is not negotiating any more
BUCKETS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Signal:
    id: str
    room_id: str
    from_user: str
    to_user: str
    kind: str
    session_id: str
    sdp: str | None
    candidate: dict[str, Any] | None
    at_ms: int

    def encode(self) -> bytes:
        return orjson.dumps({"i": self.id, "r": self.room_id, "f": self.from_user,
                             "t": self.to_user, "k": self.kind, "s": self.session_id,
                             "p": self.sdp, "c": self.candidate, "a": self.at_ms})

    @classmethod
    def decode(cls, raw: bytes) -> Signal:
        d = orjson.loads(raw)
        return cls(id=d["i"], room_id=d["r"], from_user=d["f"], to_user=d["t"], kind=d["k"],
                   session_id=d["s"], sdp=d["p"], candidate=d["c"], at_ms=d["a"])


def channel_for(room_id: str, user_id: str) -> str:
    return f"collab:signal:{room_id}:{user_id}"


class SignalRouter:
    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self._queues: dict[tuple[str, str], set[asyncio.Queue[Signal]]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def send(self, signal: Signal) -> None:
        await self.pubsub.publish(channel_for(signal.room_id, signal.to_user), signal.encode())

    async def open(self, room_id: str, user_id: str) -> asyncio.Queue[Signal]:
        key = (room_id, user_id)
        queue: asyncio.Queue[Signal] = asyncio.Queue(QUEUE_MAX)
        async with self._lock(key):
            queues = self._queues.get(key)
            if queues is None:
                queues = self._queues[key] = set()
                await self.pubsub.subscribe(channel_for(*key), self._handler(key))
            queues.add(queue)
        return queue

    async def close(self, room_id: str, user_id: str, queue: asyncio.Queue[Signal]) -> None:
        key = (room_id, user_id)
        async with self._lock(key):
            queues = self._queues.get(key)
            if queues is None:
                return
            queues.discard(queue)
            if not queues:
                del self._queues[key]
                await self.pubsub.unsubscribe(channel_for(*key))
        if key not in self._queues and not self._locks[key].locked():
            self._locks.pop(key, None)

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _handler(self, key: tuple[str, str]):  # type: ignore[no-untyped-def]
        async def deliver(raw: bytes) -> None:
            signal = Signal.decode(raw)
            for queue in list(self._queues.get(key, ())):
                try:
                    queue.put_nowait(signal)
                except asyncio.QueueFull:
                    log.warning("signals to %s in room %s dropped: the socket is not reading",
                                key[1], key[0])

        return deliver

    def __contains__(self, key: object) -> bool:
        """(room, user) has a webrtcSignals subscription in this process."""
        return key in self._queues

    def local_keys(self) -> list[tuple[str, str]]:
        """(room, user) pairs with a webrtcSignals subscription in this process."""
        return list(self._queues)

    def sizes(self) -> dict[str, int]:
        return {"signals.channels": len(self._queues), "signals.locks": len(self._locks)}


class SessionRates:
    """A token bucket per call session (SIGNAL_RATE per second, bursts of SIGNAL_BURST), in
    this process: a session's signals go through the instance its client talks to."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, session_id: str) -> float | None:
        """None when allowed, else the seconds until a signal is allowed again."""
        now = time.monotonic()
        tokens, last = self._buckets.pop(session_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[session_id] = (tokens, now)
        if len(self._buckets) > BUCKETS_KEPT:
            self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.rate

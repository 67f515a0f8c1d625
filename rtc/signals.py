"""WebRTC signals: addressed to one user of one room, never stored, never in roomEvents (an
SDP carries the sender's addresses). Each (room, user) is one pub/sub channel, subscribed
once per process however many of the user's sockets follow it; delivered in the order the
sender's instance published them."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from realtime.channels import Channels
from realtime.pubsub import PubSub
from transport.ws_limits import TokenBucket

log = logging.getLogger(__name__)
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
    """Signals by (room, addressee): every webrtcSignals subscription of the addressee in any
    instance gets each one."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self._channels: Channels[tuple[str, str], Signal] = Channels(
            pubsub, lambda key: channel_for(*key), Signal.decode)

    async def send(self, signal: Signal) -> None:
        await self._channels.publish((signal.room_id, signal.to_user), signal.encode())

    async def open(self, room_id: str, user_id: str) -> asyncio.Queue[Signal]:
        return await self._channels.open((room_id, user_id))

    async def close(self, room_id: str, user_id: str, queue: asyncio.Queue[Signal]) -> None:
        await self._channels.close((room_id, user_id), queue)

    def __contains__(self, key: object) -> bool:
        """(room, user) has a webrtcSignals subscription in this process."""
        return key in self._channels

    def local_keys(self) -> list[tuple[str, str]]:
        """(room, user) pairs with a webrtcSignals subscription in this process."""
        return self._channels.keys()

    def sizes(self) -> dict[str, int]:
        return self._channels.sizes("signals")


class SessionRates:
    """A token bucket per call session (SIGNAL_RATE per second, bursts of SIGNAL_BURST), in
    this process: a session's signals go through the instance its client talks to."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, session_id: str) -> float | None:
        """None when allowed, else the seconds until a signal is allowed again."""
        bucket = self._buckets.pop(session_id, None) or TokenBucket(self.rate, self.burst)
        self._buckets[session_id] = bucket  # the most recently used last
        if len(self._buckets) > BUCKETS_KEPT:
            self._buckets.popitem(last=False)
        return None if bucket.take() else bucket.wait()

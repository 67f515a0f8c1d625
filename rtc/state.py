"""A room's call as one small document: who is in it (with media state and which instances
hold their signal sockets), the presenter, the recording. Changed only by read-modify-write
functions applied atomically: in this process (the default), or across instances in Redis
(WATCH/MULTI, retried on conflict), so two concurrent screen-share starts have one winner
wherever they run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

T = TypeVar("T")
KEY_TTL_S = 24 * 3600  # a forgotten call (every instance crashed) does not outlive a day
MAX_RETRIES = 50
# The recording peer's participant and user id (rtc/recording.py).
RECORDER_ID = "collab-recorder"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Member:
    user_id: str
    session_id: str
    joined_ms: int
    seen_ms: int
    audio: bool
    video: bool
    # Instances holding a webrtcSignals subscription of this member, with their expiry.
    holders: dict[str, int] = field(default_factory=dict)
    consent: bool | None = None  # to the current recording; None: not answered
    consent_ms: int | None = None

    def alive(self, now: int, stale_ms: int) -> bool:
        """Held by a live instance, or joined/seen recently (its socket may be on its way)."""
        return any(expiry > now for expiry in self.holders.values()) or (
            now - self.seen_ms < stale_ms)


@dataclass
class Presenter:
    user_id: str
    session_id: str
    since_ms: int
    width: int
    height: int
    frame_rate: int
    max_bitrate_kbps: int
    preset: str | None = None


@dataclass
class Recording:
    state: str = "OFF"  # OFF | REQUESTED | RECORDING
    id: str | None = None
    requested_by: str | None = None
    started_ms: int | None = None
    instance: str | None = None  # where the recording peer runs


@dataclass
class CallState:
    members: dict[str, Member] = field(default_factory=dict)
    presenter: Presenter | None = None
    recording: Recording = field(default_factory=Recording)
    started_ms: int | None = None

    @property
    def empty(self) -> bool:
        return not self.members and self.presenter is None and self.recording.state == "OFF"

    @property
    def people(self) -> list[Member]:
        """The participants, the recording peer left out."""
        return [m for u, m in self.members.items() if u != RECORDER_ID]

    def video_senders(self) -> int:
        return sum(1 for m in self.members.values() if m.video)

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str | None) -> CallState:
        if not raw:
            return cls()
        data: dict[str, Any] = orjson.loads(raw)
        presenter = data.get("presenter")
        return cls(members={k: Member(**v) for k, v in data.get("members", {}).items()},
                   presenter=Presenter(**presenter) if presenter else None,
                   recording=Recording(**data.get("recording") or {}),
                   started_ms=data.get("started_ms"))


class CallStore(Protocol):
    async def read(self, room_id: str) -> CallState: ...
    async def read_many(self, room_ids: list[str]) -> list[CallState]: ...
    async def update(self, room_id: str, change: Callable[[CallState], T]) -> T:
        """Applies `change` (which mutates the state it is given, or raises to change
        nothing) atomically; an emptied call is deleted."""
    async def rooms(self) -> list[str]:
        """Rooms with a call (for the stale sweep)."""
    async def aclose(self) -> None: ...


class MemoryCallStore:
    """One process: a change runs without awaiting, so it is atomic on the event loop."""

    def __init__(self) -> None:
        self._calls: dict[str, bytes] = {}

    async def read(self, room_id: str) -> CallState:
        return CallState.decode(self._calls.get(room_id))

    async def read_many(self, room_ids: list[str]) -> list[CallState]:
        return [CallState.decode(self._calls.get(r)) for r in room_ids]

    async def update(self, room_id: str, change: Callable[[CallState], T]) -> T:
        # Copied through its encoding: a change that raises half-way leaves nothing behind.
        state = CallState.decode(self._calls.get(room_id))
        result = change(state)
        if state.empty:
            self._calls.pop(room_id, None)
        else:
            self._calls[room_id] = state.encode()
        return result

    async def rooms(self) -> list[str]:
        return list(self._calls)

    async def aclose(self) -> None:
        self._calls.clear()


class RedisCallStore:
    """`call:{room}` holds the document; `calls` the rooms that have one."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def key(room_id: str) -> str:
        return f"call:{room_id}"

    async def read(self, room_id: str) -> CallState:
        return CallState.decode(await self.redis.get(self.key(room_id)))

    async def read_many(self, room_ids: list[str]) -> list[CallState]:
        if not room_ids:
            return []
        raws = await self.redis.mget([self.key(r) for r in room_ids])
        return [CallState.decode(raw) for raw in raws]

    async def update(self, room_id: str, change: Callable[[CallState], T]) -> T:
        key = self.key(room_id)
        for _ in range(MAX_RETRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    state = CallState.decode(await pipe.get(key))
                    result = change(state)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if state.empty:
                        pipe.delete(key)
                        pipe.srem("calls", room_id)
                    else:
                        pipe.set(key, state.encode(), ex=KEY_TTL_S)
                        pipe.sadd("calls", room_id)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue  # another instance changed the call meanwhile: apply again
        raise RuntimeError(f"call state of {room_id} kept changing under {MAX_RETRIES} tries")

    async def rooms(self) -> list[str]:
        members = await self.redis.smembers("calls")
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def aclose(self) -> None:
        await self.redis.aclose()

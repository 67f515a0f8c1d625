"""Calls as room state: who is in a room's call with what media, kept alive by their
webrtcSignals sockets (in any instance), announced as room events. Topology-neutral: a
participant is a session others connect to; today each pair connects (full mesh, at most
CALL_MAX_VIDEO senders of video), an SFU could later be the only peer of everyone."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from audit import AuditTrail
from graph_db.events import EventRecord, EventType
from observability.metrics import CALL_PARTICIPANTS
from realtime.hub import Hub
from resolvers.errors import NotInCall, VideoLimitReached
from rtc.signals import SignalRouter
from rtc.state import RECORDER_ID, CallState, CallStore, Member, now_ms
from settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
SWEEP_EVERY_S = 15.0


@dataclass(frozen=True, slots=True)
class Joined:
    member: Member
    state: CallState
    video_allowed: bool
    rejoined: bool


@dataclass(frozen=True, slots=True)
class Change:
    """What one update did, to announce once it is committed."""

    left: list[tuple[Member, str]]  # (member, reason)
    share_ended: bool = False
    recording_ended: bool = False
    recorded: bool = False  # a recording was on: who left must leave it too


def member_data(member: Member, state: CallState) -> dict[str, Any]:
    presenter = state.presenter
    return {"participant": {**asdict(member), "holders": {},
                            "presenting": presenter is not None
                            and presenter.user_id == member.user_id}}


class CallService:
    def __init__(self, store: CallStore, hub: Hub, router: SignalRouter, audit: AuditTrail,
                 settings: Settings) -> None:
        self.store, self.hub, self.router, self.audit = store, hub, router, audit
        self.settings = settings
        self.instance = uuid.uuid4().hex[:12]
        self.max_video = settings.call_max_video
        self.stale_ms = int(settings.call_stale_seconds * 1000)
        self.holder_ttl_ms = int(2.5 * settings.ws_heartbeat_interval * 1000)
        self._leaving: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        # Set by the recording service: told when a recorded participant leaves.
        # Told (room, user, whether the recording ended) when someone leaves a recorded call.
        self.on_left_recording: list[Callable[[str, str, bool], Any]] = []

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="call-sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for handle in self._leaving.values():
            handle.cancel()
        self._leaving.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.aclose()

    # -- reading ---------------------------------------------------------------------------

    async def state(self, room_id: str) -> CallState:
        """The call as it stands (stale participants left out)."""
        return self._visible(await self.store.read(room_id))

    async def states(self, room_ids: list[str]) -> list[CallState]:
        return [self._visible(s) for s in await self.store.read_many(room_ids)]

    def _visible(self, state: CallState) -> CallState:
        now = now_ms()
        state.members = {u: m for u, m in state.members.items()
                         if m.alive(now, self.stale_ms)}
        return state

    # -- joining and leaving ---------------------------------------------------------------

    async def join(self, room_id: str, user_id: str, *, audio: bool, video: bool) -> Joined:
        local = (room_id, user_id) in self.router

        def change(state: CallState) -> tuple[Joined, Change]:
            now = now_ms()
            # The stale go as they go anywhere else: a stale presenter's share, a stale
            # recorder's recording end with them.
            done = self._after_leaving(state, self._prune(state, now))
            old = state.members.pop(user_id, None)
            allowed = state.video_senders() < self.max_video
            member = Member(user_id=user_id, session_id=secrets.token_urlsafe(12),
                            joined_ms=now, seen_ms=now, audio=audio, video=video and allowed,
                            consent=old.consent if old else None,
                            consent_ms=old.consent_ms if old else None)
            if local:
                member.holders[self.instance] = now + self.holder_ttl_ms
            if state.presenter is not None and state.presenter.user_id == user_id:
                state.presenter.session_id = member.session_id  # a rejoin keeps presenting
            state.started_ms = state.started_ms or now
            state.members[user_id] = member
            return Joined(member, state, allowed, old is not None), done

        joined, done = await self.store.update(room_id, change)
        self._cancel_leaving(room_id, user_id)
        await self._announce(room_id, done)
        if not joined.rejoined:
            CALL_PARTICIPANTS.inc()
        await self.publish(room_id, EventType.CALL_PARTICIPANT_JOINED, user_id,
                           **member_data(joined.member, joined.state))
        return joined

    async def leave(self, room_id: str, user_id: str, reason: str) -> bool:
        """True when the user was in the call. Ends their screen share."""
        def change(state: CallState) -> Change:
            gone = self._prune(state, now_ms())
            member = state.members.pop(user_id, None)
            if member is not None:
                gone.append((member, reason))
            return self._after_leaving(state, gone)

        done = await self.store.update(room_id, change)
        await self._announce(room_id, done)
        return any(m.user_id == user_id for m, _ in done.left)

    async def room_changed(self, events: list[EventRecord]) -> None:
        """Whoever leaves the room (or is removed) leaves its call; a closed room's call
        ends."""
        for event in events:
            if event.type is EventType.PARTICIPANT_LEFT and event.user_id:
                await self.leave(event.room_id, event.user_id, "left_room")
            elif event.type is EventType.ROOM_CLOSED:
                await self.end(event.room_id)

    async def end(self, room_id: str) -> None:
        def change(state: CallState) -> Change:
            gone = [(m, "room_closed") for m in state.members.values()]
            state.members.clear()
            return self._after_leaving(state, gone)

        await self._announce(room_id, await self.store.update(room_id, change))

    def _after_leaving(self, state: CallState, gone: list[tuple[Member, str]]) -> Change:
        users = {m.user_id for m, _ in gone}
        share_ended = state.presenter is not None and state.presenter.user_id in users
        if share_ended:
            state.presenter = None
        recording = state.recording.state != "OFF"
        # The call is over, or its recording peer went stale with its instance: so is the
        # recording (everyone is told; nobody is recorded without the peer anyway).
        recording_ended = recording and (not state.people or RECORDER_ID in users)
        if not state.people:
            state.members.clear()
            state.started_ms = None
        if recording_ended:
            state.members.pop(RECORDER_ID, None)
            state.recording.state, state.recording.id = "OFF", None
            state.recording.started_ms = state.recording.requested_by = None
            for member in state.members.values():
                member.consent, member.consent_ms = None, None
        return Change(gone, share_ended, recording_ended, recorded=recording)

    def _prune(self, state: CallState, now: int) -> list[tuple[Member, str]]:
        stale = [m for m in state.members.values() if not m.alive(now, self.stale_ms)]
        for member in stale:
            del state.members[member.user_id]
        return [(m, "disconnected") for m in stale]

    async def _announce(self, room_id: str, done: Change) -> None:
        for member, reason in done.left:
            if member.user_id == RECORDER_ID:
                continue
            CALL_PARTICIPANTS.dec()
            self.audit.system("call.leave", actor_id=member.user_id, room_id=room_id,
                              object_type="Call", object_id=member.session_id, code=reason)
            await self.publish(room_id, EventType.CALL_PARTICIPANT_LEFT, member.user_id,
                               reason=reason)
            if done.recorded:
                for hook in self.on_left_recording:
                    await hook(room_id, member.user_id, done.recording_ended)
        if done.share_ended:
            await self.publish(room_id, EventType.SCREEN_SHARE_CHANGED, None,
                               screenShare=None)
        if done.recording_ended:
            await self.publish(room_id, EventType.RECORDING_STATE_CHANGED, None, recording={
                "state": "OFF", "requested_by": None, "started_ms": None, "consents": []})

    async def publish(self, room_id: str, type: EventType, user_id: str | None,
                      **data: Any) -> None:
        await self.hub.publish_ephemeral(room_id, type, user_id or "", **data)

    # -- media -----------------------------------------------------------------------------

    async def set_media(self, room_id: str, user_id: str, *, audio: bool | None,
                        video: bool | None) -> tuple[Member, CallState]:
        def change(state: CallState) -> tuple[Member, CallState]:
            member = state.members.get(user_id)
            if member is None or not member.alive(now_ms(), self.stale_ms):
                raise NotInCall("you are not in this room's call", who="sender")
            if video and not member.video and state.video_senders() >= self.max_video:
                raise VideoLimitReached(
                    f"{self.max_video} participants already send video in this call",
                    maxVideo=self.max_video)
            member.audio = member.audio if audio is None else audio
            member.video = member.video if video is None else video
            return member, state

        member, state = await self.store.update(room_id, change)
        await self.publish(room_id, EventType.MEDIA_STATE_CHANGED, user_id,
                           **member_data(member, state))
        return member, state

    # -- liveness: webrtcSignals sockets ---------------------------------------------------

    async def socket_opened(self, room_id: str, user_id: str) -> None:
        self._cancel_leaving(room_id, user_id)
        await self._hold(room_id, user_id)

    def socket_closed(self, room_id: str, user_id: str) -> None:
        """The user's last webrtcSignals socket of this room in this process went: unless
        one comes back (here or elsewhere) within the grace, they leave the call."""
        if (room_id, user_id) in self.router:
            return
        loop = asyncio.get_running_loop()
        key = (room_id, user_id)
        self._cancel_leaving(*key)
        self._leaving[key] = loop.call_later(
            self.settings.call_grace_seconds, lambda: self._spawn(self._gone(key)))

    def _cancel_leaving(self, room_id: str, user_id: str) -> None:
        handle = self._leaving.pop((room_id, user_id), None)
        if handle is not None:
            handle.cancel()

    async def _gone(self, key: tuple[str, str]) -> None:
        self._leaving.pop(key, None)
        if key in self.router:
            return
        room_id, user_id = key

        def change(state: CallState) -> Change:
            now = now_ms()
            gone = self._prune(state, now)
            member = state.members.get(user_id)
            if member is not None:
                member.holders.pop(self.instance, None)
                if not any(e > now for e in member.holders.values()):
                    del state.members[user_id]
                    gone.append((member, "disconnected"))
            return self._after_leaving(state, gone)

        await self._announce(room_id, await self.store.update(room_id, change))

    async def _hold(self, room_id: str, user_id: str) -> None:
        def change(state: CallState) -> None:
            member = state.members.get(user_id)
            if member is not None:
                now = now_ms()
                member.holders[self.instance] = now + self.holder_ttl_ms
                member.seen_ms = now

        await self.store.update(room_id, change)

    async def heartbeat(self) -> None:
        """Keeps this process's sockets' participants alive in the shared state."""
        for room_id, user_id in self.router.local_keys():
            try:
                await self._hold(room_id, user_id)
            except Exception:
                log.warning("call heartbeat for %s in %s failed", user_id, room_id,
                            exc_info=True)

    async def sweep(self) -> None:
        """Participants nobody holds any more (a crashed instance's) leave."""
        for room_id in await self.store.rooms():
            def change(state: CallState) -> Change:
                return self._after_leaving(state, self._prune(state, now_ms()))

            done = await self.store.update(room_id, change)
            if done.left:
                await self._announce(room_id, done)

    async def _sweep_forever(self) -> None:
        interval = min(SWEEP_EVERY_S, self.settings.ws_heartbeat_interval)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
                await self.sweep()
            except Exception:
                log.warning("call sweep failed", exc_info=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def update(self, room_id: str, change: Callable[[CallState], T]) -> T:
        return await self.store.update(room_id, change)

    def sizes(self) -> dict[str, int]:
        return {"calls.leaving": len(self._leaving), "calls.tasks": len(self._tasks)}

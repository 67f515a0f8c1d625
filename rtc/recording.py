"""Recording a call, only with consent (ENABLE_VIDEO_RECORDING). A host starts it; everyone
in the call is asked; a server-side peer (rtc/recorder.py) joins the call as the recorder
participant and answers the offers of those who consented only. A revocation reaches the
recorder at once through the same signal channel as WebRTC signals (whichever instance runs
it), which ends that participant's files.

The recorder runs on the instance that started it; its files go under RECORDING_DIR (mode
0600), one per track, probed when they end (an empty one is logged as an error)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from graph_db import users
from graph_db.driver import GraphDB
from graph_db.events import EventType
from graph_db.models import Role
from observability.metrics import RECORDINGS
from resolvers.errors import Conflict, FeatureDisabled, NotInCall
from rtc.calls import CallService
from rtc.recorder import RoomRecorder, TrackFile
from rtc.signals import Signal, SignalRouter
from rtc.state import RECORDER_ID, CallState, Member, now_ms

log = logging.getLogger(__name__)
RECORDER_NAME = "Call recorder"
# Control messages to the recorder, on its signal channel (never from a client: clients can
# only send the four WebRTC kinds).
ALLOW, REVOKE, STOP = "CONSENT", "REVOKE", "STOP"


class RecordingService:
    def __init__(self, calls: CallService, router: SignalRouter, db: GraphDB, *,
                 enabled: bool, directory: Path) -> None:
        self.calls, self.router, self.db = calls, router, db
        self.enabled, self.directory = enabled, directory
        self._running: dict[str, asyncio.Task[None]] = {}
        # Set once files exist (app.py): a finished track is stored encrypted like a shared
        # file of the room, its plaintext deleted. Unset: the files stay here, 0600.
        self.keep: Callable[[str, str, Path], Awaitable[Any]] | None = None
        self.finished: dict[str, list[TrackFile]] = {}  # by recording id (tests, alerts)
        calls.on_left_recording.append(self._left)

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise FeatureDisabled("recording is turned off on this service "
                                  "(ENABLE_VIDEO_RECORDING)", feature="recording")

    async def start(self, room_id: str, host_id: str) -> CallState:
        self._check_enabled()
        await users.upsert_user(self.db, user_id=RECORDER_ID, name=RECORDER_NAME,
                                role=Role.TEACHER, email=None)
        recording_id = secrets.token_hex(8)

        def change(state: CallState) -> CallState:
            if host_id not in state.members:
                raise NotInCall("join the call before recording it", who="sender")
            if state.recording.state != "OFF":
                raise Conflict("this call is already being recorded")
            now = now_ms()
            for member in state.members.values():
                member.consent, member.consent_ms = None, None
            state.recording.state, state.recording.id = "RECORDING", recording_id
            state.recording.requested_by, state.recording.started_ms = host_id, now
            state.recording.instance = self.calls.instance
            state.members[RECORDER_ID] = Member(
                user_id=RECORDER_ID, session_id=secrets.token_urlsafe(12), joined_ms=now,
                seen_ms=now, audio=False, video=False,
                holders={self.calls.instance: now + self.calls.holder_ttl_ms})
            return state

        state = await self.calls.update(room_id, change)
        self._run(room_id, recording_id, state.members[RECORDER_ID].session_id)
        await self._announce(room_id, host_id, state, requested=True)
        return state

    async def stop(self, room_id: str, host_id: str) -> CallState:
        self._check_enabled()

        def change(state: CallState) -> CallState:
            state.recording.state, state.recording.id = "OFF", None
            state.recording.started_ms = None
            state.members.pop(RECORDER_ID, None)
            for member in state.members.values():
                member.consent, member.consent_ms = None, None
            return state

        state = await self.calls.update(room_id, change)
        await self._control(room_id, host_id, STOP)
        await self._announce(room_id, host_id, state)
        return state

    async def consent(self, room_id: str, user_id: str, granted: bool) -> CallState:
        def change(state: CallState) -> CallState:
            member = state.members.get(user_id)
            if member is None:
                raise NotInCall("you are not in this room's call", who="sender")
            if state.recording.state == "OFF":
                raise Conflict("this call is not being recorded")
            member.consent, member.consent_ms = granted, now_ms()
            return state

        state = await self.calls.update(room_id, change)
        # At once: a revocation ends the participant's recording before this returns.
        await self._control(room_id, user_id, ALLOW if granted else REVOKE)
        await self._announce(room_id, user_id, state)
        return state

    async def _announce(self, room_id: str, user_id: str, state: CallState, *,
                        requested: bool = False) -> None:
        data = {"recording": _recording_data(state)}
        if requested:
            await self.calls.publish(room_id, EventType.RECORDING_CONSENT_REQUESTED, user_id,
                                     **data)
        await self.calls.publish(room_id, EventType.RECORDING_STATE_CHANGED, user_id, **data)

    async def _control(self, room_id: str, user_id: str, kind: str) -> None:
        await self.router.send(Signal(id=secrets.token_hex(8), room_id=room_id,
                                      from_user=user_id, to_user=RECORDER_ID, kind=kind,
                                      session_id="", sdp=None, candidate=None,
                                      at_ms=now_ms()))

    async def _left(self, room_id: str, user_id: str, ended: bool) -> None:
        """A participant left a recorded call: their recording ends (wherever the recorder
        runs); when the recording itself ended with it (the last one out), the recorder
        stops."""
        if user_id == RECORDER_ID:
            return
        await self._control(room_id, user_id, STOP if ended else REVOKE)

    # -- the recorder peer, on this instance -----------------------------------------------

    def _run(self, room_id: str, recording_id: str, session_id: str) -> None:
        task = asyncio.create_task(self._serve(room_id, recording_id, session_id),
                                   name=f"recorder-{room_id}")
        self._running[room_id] = task
        task.add_done_callback(lambda _: self._running.pop(room_id, None))

    async def _serve(self, room_id: str, recording_id: str, session_id: str) -> None:
        queue = await self.router.open(room_id, RECORDER_ID)
        recorder = RoomRecorder(room_id, self.directory / room_id / recording_id,
                                self._sender(room_id, session_id), user_id=RECORDER_ID,
                                session_id=session_id)
        files: list[TrackFile] = []
        try:
            while True:
                signal = await queue.get()
                if signal.kind == STOP:
                    break
                files.extend(await self._handle(recorder, signal))
        except Exception:
            log.exception("the recorder of room %s failed", room_id)
        finally:
            files.extend(await recorder.close())
            await self.router.close(room_id, RECORDER_ID, queue)
            self._finished(recording_id, files)
            await self._kept(room_id, files)

    @staticmethod
    async def _handle(recorder: RoomRecorder, signal: Signal) -> list[TrackFile]:
        if signal.kind == ALLOW:
            recorder.allow(signal.from_user)
        elif signal.kind == REVOKE:
            return await recorder.revoke(signal.from_user)
        else:
            await recorder.on_signal(signal.from_user, signal.kind, signal.session_id,
                                     signal.sdp, signal.candidate)
        return []

    def _sender(self, room_id: str, session_id: str) -> Any:
        async def send(to_user: str, kind: str, _session: str, sdp: str | None,
                       candidate: dict[str, Any] | None) -> None:
            await self.router.send(Signal(id=secrets.token_hex(8), room_id=room_id,
                                          from_user=RECORDER_ID, to_user=to_user, kind=kind,
                                          session_id=session_id, sdp=sdp, candidate=candidate,
                                          at_ms=now_ms()))

        return send

    def _finished(self, recording_id: str, files: list[TrackFile]) -> None:
        self.finished[recording_id] = files
        for track in files:
            RECORDINGS.labels("empty" if track.empty else "ok").inc()

    async def _kept(self, room_id: str, files: list[TrackFile]) -> None:
        if self.keep is None:
            return
        for track in files:
            if track.empty:
                continue  # alerted; nothing worth keeping
            try:
                await self.keep(room_id, RECORDER_ID, track.path)
            except Exception:
                log.exception("recording %s not stored encrypted: kept at %s (0600)",
                              track.path.name, track.path)
                continue
            track.path.unlink(missing_ok=True)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)


def _recording_data(state: CallState) -> dict[str, Any]:
    r = state.recording
    return {"state": r.state, "requested_by": r.requested_by, "started_ms": r.started_ms,
            "consents": [{"user_id": m.user_id, "granted": m.consent, "at_ms": m.consent_ms}
                         for m in state.members.values() if m.consent is not None]}

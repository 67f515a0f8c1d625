"""The recording peer of a room's call: a server-side aiortc participant that answers the
OFFERs of consenting participants and writes each track it receives to a file of its own.

One `MediaRecorder` per track, so a participant's camera, microphone and screen share are
separate files (webm: VP8 and Opus, encoded by PyAV's bundled libvpx/libopus, so it works
offline). Files are 0600 in a 0700 directory. Every finished file is decoded once by `probe`:
an empty recording is what fails silently in other stacks (../shared/notes/calls.md §1, pain
point 4), so it is logged as an error and reported with `empty=True`.

aiortc answers with all its candidates in the SDP and has no ICE restart: a second OFFER of
a participant is a new connection, with new files."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRecorder
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

log = logging.getLogger(__name__)

SendSignal = Callable[[str, str, str, str | None, dict[str, Any] | None], Awaitable[None]]

# From an OFFER to its ANSWER: ICE gathering against an unreachable STUN/TURN server is the slow
# part; past this the offer is refused (HANGUP) rather than left pending.
NEGOTIATION_TIMEOUT = 10.0
# A connection with wrong TURN credentials stays "new" for ever, never "failed" (notes §2b).
CONNECT_TIMEOUT = 30.0
# pc.close() and signals sent while stopping: close() must end even if a peer or the bus is gone.
CLOSE_TIMEOUT = 3.0
SEND_TIMEOUT = 3.0
# MediaRecorder encodes on the event loop. libvpx's default deadline ("good") took ~38 ms per
# 640x360 frame and ~70 ms at 1280x720 (moving stripes, this 2-core box); "realtime" with
# cpu-used 8: ~2 ms and ~10 ms.
VP8_OPTIONS = {"deadline": "realtime", "cpu-used": "8"}
# PyAV's muxer otherwise writes nothing before ~1 MB is buffered (the header included): 30 s
# to minutes of a call only in memory, lost with the process. With it the header is on disk at
# the first frame and each Matroska cluster (≤ 5 s) when it is complete (measured).
CONTAINER_OPTIONS = {"flush_packets": "1"}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class TrackFile:
    user_id: str
    kind: str  # "audio" | "video"
    path: Path
    frames: int  # decoded frames (video) or decoded audio frames
    duration: float  # seconds, from decoded pts span (container duration if no frames)
    empty: bool  # no frame decoded: the service alerts on it


@dataclass(eq=False, slots=True)
class _Peer:
    user_id: str
    session_id: str
    pc: RTCPeerConnection
    files: list[tuple[MediaRecorder, str, Path]] = field(default_factory=list)
    # Trickled candidates that came before the OFFER's remote description was set.
    pending: list[RTCIceCandidate] = field(default_factory=list)
    finished: bool = False
    timer: asyncio.TimerHandle | None = None


def probe(user_id: str, kind: str, path: Path) -> TrackFile:
    """Decode the whole file (blocking: run it in a thread). Never raises: what cannot be read
    counts as empty. webm has no frame count (stream.frames is 0), hence the decoding."""
    frames, first, last, tail, container_duration = 0, 0.0, 0.0, 0.0, 0.0
    try:
        with av.open(str(path)) as container:
            if container.duration:
                container_duration = container.duration / av.time_base
            for frame in container.decode(container.streams[0]):  # one stream per file
                if not isinstance(frame, av.AudioFrame | av.VideoFrame):
                    continue  # not in our files; keeps the types exact
                start = frame.time or 0.0
                first = start if frames == 0 else min(first, start)
                last = max(last, start)
                # Audio frames know their length; a video frame's duration is MediaRecorder's
                # declared 30 fps whatever the source's rate, so it is estimated below.
                tail = frame.samples / frame.sample_rate if isinstance(frame, av.AudioFrame) else 0
                frames += 1
    except Exception as exc:  # a damaged file can raise anything PyAV has; what decoded counts
        log.warning("recording %s unreadable after %d frames: %s", path.name, frames, exc)
    if frames == 0:
        log.error("recording of %s %s is empty", user_id, kind)
        return TrackFile(user_id, kind, path, 0, container_duration, True)
    span = last - first
    if kind == "video" and frames > 1:
        tail = span / (frames - 1)  # the mean frame interval: n frames last n intervals
    return TrackFile(user_id, kind, path, frames, span + tail, False)


def _realtime(recorder: MediaRecorder) -> None:
    """Encode VP8 with VP8_OPTIONS. MediaRecorder offers no codec options, so this reaches
    into its private track table (aiortc is pinned below 1.17); absent, nothing changes."""
    for context in getattr(recorder, "_MediaRecorder__tracks", {}).values():
        if context.stream.type == "video":
            context.stream.codec_context.options = dict(VP8_OPTIONS)


class RoomRecorder:
    """The recording participant `user_id` (signalling as `session_id`) of `room_id`'s call."""

    def __init__(self, room_id: str, directory: Path, send: SendSignal, *, user_id: str,
                 session_id: str, ice_servers: list[RTCIceServer] | None = None) -> None:
        self.room_id = room_id
        self.user_id = user_id
        self.session_id = session_id
        self._directory = directory
        self._send = send
        self._ice_servers = list(ice_servers or [])
        self._allowed: set[str] = set()
        self._peers: dict[str, _Peer] = {}
        self._probes: dict[str, list[asyncio.Task[TrackFile]]] = {}
        # Finishes started from aiortc callbacks: held so they are not collected mid-run.
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = 0
        self._closed = False
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode goes through the umask, and an existing directory keeps its own.
        directory.chmod(0o700)

    @property
    def recording_users(self) -> set[str]:
        return {user for user, peer in self._peers.items() if peer.files}

    def allow(self, user_id: str) -> None:
        if not self._closed:
            self._allowed.add(user_id)

    async def revoke(self, user_id: str) -> list[TrackFile]:
        """Stop `user_id`'s recording now; their files finished since the last revoke
        (earlier connections included), probed. Later OFFERs of theirs get a HANGUP."""
        self._allowed.discard(user_id)
        peer = self._peers.get(user_id)
        if peer is not None:
            await self._finish(peer)
            await self._signal(user_id, "HANGUP")
        return await self._collect(user_id)

    async def close(self) -> list[TrackFile]:
        """Stop every recording; every file not yet returned by `revoke`, probed."""
        self._closed = True
        self._allowed.clear()
        peers = list(self._peers.values())
        await asyncio.gather(*(self._finish(peer) for peer in peers))
        await asyncio.gather(*(self._signal(peer.user_id, "HANGUP") for peer in peers))
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT)
        files: list[TrackFile] = []
        for user_id in list(self._probes):
            files.extend(await self._collect(user_id))
        return files

    async def on_signal(self, from_user: str, kind: str, session_id: str, sdp: str | None,
                        candidate: dict[str, Any] | None) -> None:
        if kind == "OFFER":
            await self._on_offer(from_user, session_id, sdp)
        elif kind == "ICE_CANDIDATE":
            await self._on_candidate(from_user, session_id, candidate)
        elif kind == "HANGUP":
            peer = self._peers.get(from_user)
            # Only the session that made the connection ends it: a late HANGUP of an older
            # session must not end the recording of the new one.
            if peer is not None and peer.session_id == session_id:
                await self._finish(peer)
        else:  # the recorder never offers, so an ANSWER can only be stale
            log.debug("recorder of %s ignores %s from %s", self.room_id, kind, from_user)

    async def _on_offer(self, user_id: str, session_id: str, sdp: str | None) -> None:
        if self._closed or user_id not in self._allowed or not sdp:
            await self._signal(user_id, "HANGUP")  # never answered: nothing is recorded
            return
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        peer = _Peer(user_id, session_id, pc)
        # Registered before any await, and before the old connection is finished, so that a
        # revoke, close() or newer OFFER arriving mid-negotiation ends this one.
        old, self._peers[user_id] = self._peers.get(user_id), peer
        if old is not None:
            await self._finish(old)
        tracks: list[MediaStreamTrack] = []
        pc.on("track", tracks.append)
        pc.on("connectionstatechange", lambda: self._on_state(peer))
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                answer = await self._answer(peer, sdp)
        except Exception as exc:  # bad SDP, the PC closed under us, the timeout
            if not peer.finished:
                log.warning("recorder of %s cannot answer %s: %r", self.room_id, user_id, exc)
                await self._finish(peer)
                await self._signal(user_id, "HANGUP")
            return
        # Files are opened once the ANSWER is out, so a refused or failed negotiation leaves
        # none (no false "empty" alert). Nothing is lost: no frame can come before the peer has
        # the ANSWER, and aiortc queues received frames until they are read.
        if peer.finished or not await self._signal(user_id, "ANSWER", answer) or peer.finished:
            await self._finish(peer)
            return
        await self._record(peer, tracks)
        peer.timer = asyncio.get_running_loop().call_later(
            CONNECT_TIMEOUT, self._check_connected, peer)

    async def _answer(self, peer: _Peer, sdp: str) -> str:
        pc = peer.pc
        # The "track" events fire inside setRemoteDescription: every track is known after it.
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for candidate in peer.pending:
            await pc.addIceCandidate(candidate)
        peer.pending.clear()
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def _record(self, peer: _Peer, tracks: list[MediaStreamTrack]) -> None:
        for track in tracks:
            path = self._new_path(peer.user_id, track.kind)
            recorder = MediaRecorder(str(path), format="webm", options=dict(CONTAINER_OPTIONS))
            recorder.addTrack(track)  # one track per recorder: each track its own file
            _realtime(recorder)
            peer.files.append((recorder, track.kind, path))
        # start() only schedules each track's reading task; a recorder stopped first stays so.
        for recorder, _, _ in peer.files:
            await recorder.start()

    async def _on_candidate(self, user_id: str, session_id: str,
                            init: dict[str, Any] | None) -> None:
        """A trickled candidate (RTCIceCandidateInit). An empty one (end-of-candidates) is
        ignored: aioice then never calls a first connection attempt "failed" by itself, which
        CONNECT_TIMEOUT covers; once connected, consent freshness still detects a lost peer."""
        peer = self._peers.get(user_id)
        text = (init or {}).get("candidate")
        if peer is None or peer.session_id != session_id or not isinstance(text, str):
            return
        text = text.strip().removeprefix("a=").removeprefix("candidate:")
        if not text or init is None:
            return
        try:
            candidate = candidate_from_sdp(text)
            mid, index = init.get("sdpMid"), init.get("sdpMLineIndex")
            candidate.sdpMid = mid if isinstance(mid, str) else None
            candidate.sdpMLineIndex = index if type(index) is int else None
            if peer.pc.remoteDescription is None:
                peer.pending.append(candidate)
            else:
                await peer.pc.addIceCandidate(candidate)
        except (AssertionError, ValueError, IndexError) as exc:  # candidate_from_sdp asserts
            log.warning("recorder of %s: bad candidate from %s: %r", self.room_id, user_id, exc)

    def _new_path(self, user_id: str, kind: str) -> Path:
        """A new file, created 0600 before PyAV opens it (PyAV creates it only at the first
        packet, with the umask's mode; it keeps the mode of a file that exists)."""
        name = _UNSAFE.sub("_", user_id)[:100] or "_"  # a user id is no path
        while True:
            self._counter += 1
            path = self._directory / f"{name}-{self._counter}-{kind}.webm"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # an earlier recorder's file: never overwrite a recording
                continue
            os.close(fd)
            return path

    def _on_state(self, peer: _Peer) -> None:
        if peer.pc.connectionState in ("failed", "closed") and not peer.finished:
            self._spawn(self._finish(peer))

    def _check_connected(self, peer: _Peer) -> None:
        if not peer.finished and peer.pc.connectionState in ("new", "connecting"):
            log.warning("recorder of %s: %s never connected", self.room_id, peer.user_id)
            self._spawn(self._finish(peer))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, peer: _Peer) -> None:
        """Close the peer's files first (no byte after this), start probing them, then close
        its connection."""
        if peer.finished:
            return
        peer.finished = True
        if self._peers.get(peer.user_id) is peer:
            del self._peers[peer.user_id]
        if peer.timer is not None:
            peer.timer.cancel()
        probes = self._probes.setdefault(peer.user_id, [])
        for recorder, kind, path in peer.files:
            try:
                await recorder.stop()
            except Exception as exc:  # flushing the encoder or the muxer failed: probe tells
                log.error("recording %s did not close cleanly: %r", path.name, exc)
            probes.append(asyncio.create_task(asyncio.to_thread(probe, peer.user_id, kind, path)))
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await peer.pc.close()
        except Exception as exc:  # a vanished peer must not hold the recorder up
            log.warning("recorder of %s: closing %s's connection: %r", self.room_id,
                        peer.user_id, exc)

    async def _collect(self, user_id: str) -> list[TrackFile]:
        return list(await asyncio.gather(*self._probes.pop(user_id, [])))

    async def _signal(self, to_user: str, kind: str, sdp: str | None = None) -> bool:
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self._send(to_user, kind, self.session_id, sdp, None)
        except Exception as exc:  # e.g. the addressee left the call: the recorder goes on
            log.warning("recorder of %s: %s to %s not sent: %r", self.room_id, kind, to_user, exc)
            return False
        return True

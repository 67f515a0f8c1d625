"""The recording peer (rtc/recorder.py) against real aiortc participants in this process, on
loopback ICE, signalling through plain callbacks (no service): consent gates the answer,
each track is its own 0600 file with the frames sent, revocation and close() stop at once."""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRecorder

from rtc import recorder as recorder_module
from rtc.recorder import VP8_OPTIONS, RoomRecorder, TrackFile, _realtime, probe
from tests.media import FakeAudioTrack, FakeVideoTrack, patch_loopback

FPS = 15
RECORDER = "recorder:room-1"
RECORDER_SESSION = "recorder-session"


class Participant:
    """A browser stand-in: a camera and a microphone, offering to the recorder."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.session_id = f"session-{user_id}"
        self.signals: list[str] = []
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs = [self.pc]

    async def local_offer(self) -> str:
        """A new connection with new tracks (what an ICE restart is in aiortc): its offer."""
        if self.pc.signalingState != "stable" or self.pc.getSenders():
            self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            self.pcs.append(self.pc)
        self.video, self.audio = FakeVideoTrack(320, 240, FPS), FakeAudioTrack()
        self.pc.addTrack(self.video)
        self.pc.addTrack(self.audio)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def offer(self, recorder: RoomRecorder) -> None:
        sdp = await self.local_offer()
        await recorder.on_signal(self.user_id, "OFFER", self.session_id, sdp, None)

    async def receive(self, kind: str, sdp: str | None) -> None:
        self.signals.append(kind)
        if kind == "ANSWER":
            assert sdp is not None
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))


class Bus:
    """What the service does for the recorder: deliver its signals to the addressee."""

    def __init__(self) -> None:
        self.people: dict[str, Participant] = {}
        self.lost: set[str] = set()  # addressees whose ANSWERs vanish on the way

    def join(self, user_id: str) -> Participant:
        self.people[user_id] = Participant(user_id)
        return self.people[user_id]

    async def send(self, to_user: str, kind: str, session_id: str, sdp: str | None,
                   candidate: dict[str, Any] | None) -> None:
        assert session_id == RECORDER_SESSION
        assert candidate is None  # aiortc does not trickle
        if not (kind == "ANSWER" and to_user in self.lost):
            await self.people[to_user].receive(kind, sdp)


@pytest.fixture
async def bus(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bus]:
    patch_loopback(monkeypatch)
    bus = Bus()
    yield bus
    for person in bus.people.values():
        for pc in person.pcs:
            await pc.close()


@pytest.fixture
async def recorder(tmp_path: Path, bus: Bus) -> AsyncIterator[RoomRecorder]:
    room = RoomRecorder("room-1", tmp_path / "recordings", bus.send, user_id=RECORDER,
                        session_id=RECORDER_SESSION)
    yield room
    await room.close()


async def first_frame(directory: Path, user_id: str, kind: str = "video") -> float:
    """Loop time at which the recorder wrote `user_id`'s first `kind` packet: the file exists,
    empty, from the ANSWER on; its header is written with the first packet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline:
        if any(path.stat().st_size for path in directory.glob(f"{user_id}-*-{kind}.webm")):
            return loop.time()
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {kind} frame of {user_id} recorded")


def by_kind(files: list[TrackFile]) -> dict[str, TrackFile]:
    assert len(files) == 2, files
    return {file.kind: file for file in files}


def sizes(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in directory.iterdir()}


async def recording(recorder: RoomRecorder, bus: Bus, directory: Path, user_id: str,
                    seconds: float) -> Participant:
    """`user_id` consented, connected and recorded for about `seconds` past its first frame."""
    peer = bus.join(user_id)
    recorder.allow(user_id)
    await peer.offer(recorder)
    await first_frame(directory, user_id)
    await asyncio.sleep(seconds)
    return peer


async def test_consenting_participant_gets_a_file_per_track(
        recorder: RoomRecorder, bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "recordings"
    alice = bus.join("alice")
    recorder.allow("alice")
    await alice.offer(recorder)
    assert alice.signals == ["ANSWER"]
    started = await first_frame(directory, "alice")
    sent_before = alice.video.sent
    assert recorder.recording_users == {"alice"}
    await asyncio.sleep(3.0)
    seconds = asyncio.get_running_loop().time() - started
    files = by_kind(await recorder.revoke("alice"))
    sent = alice.video.sent - sent_before + 1

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for file in files.values():
        assert file.user_id == "alice" and not file.empty
        assert file.path.parent == directory and file.path.name.endswith(f"-{file.kind}.webm")
        assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    assert alice.signals == ["ANSWER", "HANGUP"]
    video, audio = files["video"], files["audio"]
    if sent < 0.75 * FPS * seconds:
        # Seen at load average 16 on this 2-core box: 19 frames sent in 3.3 s. Both peers
        # are in this process, so a starved CPU slows the sender first; not the recorder.
        pytest.skip(f"CPU starved: the sender made {sent} frames in {seconds:.1f} s")
    assert abs(video.frames - FPS * seconds) <= 0.25 * FPS * seconds, (video, sent, seconds)
    assert abs(video.duration - seconds) <= 0.25 * seconds, (video, seconds)
    assert abs(audio.duration - seconds) <= 0.25 * seconds, (audio, seconds)
    assert abs(audio.frames - 50 * seconds) <= 0.25 * 50 * seconds, (audio, seconds)  # 20 ms


async def test_participant_without_consent_gets_hangup_and_no_file(
        recorder: RoomRecorder, bus: Bus, tmp_path: Path) -> None:
    recorder.allow("alice")
    bob = bus.join("bob")
    await bob.offer(recorder)
    assert bob.signals == ["HANGUP"]
    assert recorder.recording_users == set()
    assert list((tmp_path / "recordings").iterdir()) == []
    assert await recorder.revoke("bob") == []


async def test_revocation_stops_writing_at_once(
        recorder: RoomRecorder, bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "recordings"
    alice = await recording(recorder, bus, directory, "alice", 1.0)
    files = by_kind(await recorder.revoke("alice"))
    assert recorder.recording_users == set()
    written = sizes(directory)
    assert all(written.values()) and set(written) == {f.path.name for f in files.values()}
    await asyncio.sleep(1.0)
    assert sizes(directory) == written
    # The consent went with the revocation: a new OFFER is refused.
    await alice.offer(recorder)
    assert alice.signals == ["ANSWER", "HANGUP", "HANGUP"]
    assert sizes(directory) == written


async def test_close_finishes_files_of_connected_peers(
        recorder: RoomRecorder, bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "recordings"
    alice = await recording(recorder, bus, directory, "alice", 1.0)
    loop = asyncio.get_running_loop()
    closing = loop.time()
    files = by_kind(await recorder.close())
    assert loop.time() - closing < 3.0
    assert not files["video"].empty and not files["audio"].empty
    assert recorder.recording_users == set()
    assert alice.signals == ["ANSWER", "HANGUP"]


async def test_trickled_candidates_are_used(recorder: RoomRecorder, bus: Bus,
                                            tmp_path: Path) -> None:
    """A browser's offer may carry no candidate at all: they follow as ICE_CANDIDATE signals,
    possibly while the OFFER is still being applied."""
    alice = bus.join("alice")
    recorder.allow("alice")
    lines = (await alice.local_offer()).splitlines()
    hosts = [line[2:] for line in lines if line.startswith("a=candidate:")]
    bare = "\r\n".join(line for line in lines
                        if not line.startswith(("a=candidate:", "a=end-of-candidates")))
    assert hosts and "127.0.0.1" in hosts[0]

    async def trickle() -> None:
        inits: list[dict[str, Any]] = [
            {"candidate": "candidate:nonsense", "sdpMid": "0"}, {"sdpMid": "0"},
            # All on the first m-line: BUNDLE makes it the one transport.
            *({"candidate": host, "sdpMid": "0", "sdpMLineIndex": 0} for host in hosts),
            {"candidate": "", "sdpMid": "0"}]
        for init in inits:
            await recorder.on_signal("alice", "ICE_CANDIDATE", alice.session_id, None, init)

    await asyncio.gather(
        recorder.on_signal("alice", "OFFER", alice.session_id, bare + "\r\n", None), trickle())
    assert alice.signals == ["ANSWER"]
    remote = recorder._peers["alice"].pc.getTransceivers()[0].receiver.transport.transport
    assert {(c.ip, c.port) for c in remote.getRemoteCandidates()} >= {
        (host.split()[4], int(host.split()[5])) for host in hosts}
    await first_frame(tmp_path / "recordings", "alice")


async def test_new_offer_is_a_new_connection_with_new_files(
        recorder: RoomRecorder, bus: Bus, tmp_path: Path) -> None:
    directory = tmp_path / "recordings"
    alice = await recording(recorder, bus, directory, "alice", 0.5)
    await alice.offer(recorder)  # an ICE restart, aiortc style
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len([p for p in directory.iterdir() if p.stat().st_size]) < 4:
        assert loop.time() < deadline, sizes(directory)
        await asyncio.sleep(0.05)
    assert recorder.recording_users == {"alice"}
    files = await recorder.revoke("alice")  # both connections' files
    assert len({file.path for file in files}) == 4
    assert all(not file.empty for file in files)
    assert alice.signals == ["ANSWER", "ANSWER", "HANGUP"]


async def test_peer_that_closes_without_hangup_is_finished(
        recorder: RoomRecorder, bus: Bus, tmp_path: Path) -> None:
    alice = bus.join("alice")
    recorder.allow("alice")
    await alice.offer(recorder)
    await first_frame(tmp_path / "recordings", "alice")
    await first_frame(tmp_path / "recordings", "alice", "audio")
    await alice.pc.close()  # DTLS close_notify: the recorder's connection goes "closed"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while recorder.recording_users:
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    files = by_kind(await recorder.revoke("alice"))
    assert not files["video"].empty and not files["audio"].empty


async def test_peer_that_never_connects_gives_empty_files_and_alerts(
        recorder: RoomRecorder, bus: Bus, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(recorder_module, "CONNECT_TIMEOUT", 0.5)
    carol = bus.join("carol")
    bus.lost.add("carol")
    recorder.allow("carol")
    await carol.offer(recorder)
    assert recorder.recording_users == {"carol"}  # answered: files open, waiting for ICE
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while recorder.recording_users:
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    closing = loop.time()
    with caplog.at_level(logging.ERROR, logger="rtc.recorder"):
        files = by_kind(await recorder.close())
    assert loop.time() - closing < 3.0
    assert all(file.empty and file.frames == 0 for file in files.values())
    assert "recording of carol video is empty" in caplog.text


def test_empty_or_unreadable_file_is_reported_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty, garbage = tmp_path / "a-1-video.webm", tmp_path / "a-2-audio.webm"
    empty.touch()
    garbage.write_bytes(b"\x1aE\xdf\xa3 not really webm" * 10)
    with caplog.at_level(logging.ERROR, logger="rtc.recorder"):
        files = [probe("a", "video", empty), probe("a", "audio", garbage),
                 probe("a", "video", tmp_path / "missing.webm")]
    assert [(file.empty, file.frames) for file in files] == [(True, 0)] * 3
    assert "recording of a video is empty" in caplog.text
    assert "recording of a audio is empty" in caplog.text


async def test_the_vp8_options_reach_mediarecorders_encoder(tmp_path: Path) -> None:
    """rtc/recorder.py `_realtime` reads MediaRecorder's private track table (aiortc has no
    codec options): this fails when aiortc changes it, instead of recording slowly again."""
    media = MediaRecorder(str(tmp_path / "probe.webm"))
    media.addTrack(FakeVideoTrack(160, 120, 10))
    _realtime(media)
    tracks = getattr(media, "_MediaRecorder__tracks", None)
    assert tracks, "aiortc's MediaRecorder no longer keeps its tracks where _realtime looks"
    (context,) = tracks.values()
    assert context.stream.codec_context.options == VP8_OPTIONS
    await media.stop()

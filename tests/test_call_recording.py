"""Recording a call only with consent, end to end: a host starts it, everyone is asked, the
service's recording peer joins the call through the same signaling and answers only those who
consented; a revocation ends that participant's files at once; what was recorded decodes to
the frames that were sent. Real aiortc clients signalling over the real API."""

from __future__ import annotations

import asyncio
import contextlib
import io
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtc.state import RECORDER_ID
from tests.call_helpers import (
    CALL,
    CALL_EVENTS,
    CONSENT,
    START_RECORDING,
    STOP_RECORDING,
    SignalSocket,
    join,
)
from tests.conftest import make_settings
from tests.gql_helpers import failure, register
from tests.harness import LiveServer
from tests.media import FakeAudioTrack, FakeVideoTrack, patch_loopback
from tests.personas import People, Persona, make_room
from tests.test_audit import trail
from tests.wsclient import connect

FPS = 10


@pytest.fixture(scope="module")
def recording_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("recordings")
    settings = make_settings(tmp_path_factory.mktemp("rec-graph"), enable_video_recording=True,
                             recording_dir=folder, stun_servers=[])
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture
async def crowd(recording_live: LiveServer, monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[People]:
    patch_loopback(monkeypatch)
    people = People(recording_live.settings, recording_live.url)
    yield people
    await people.aclose()


class Client:
    """A participant's app: its signal socket, and a connection to the recorder that sends a
    camera (and a microphone) once it consented."""

    def __init__(self, socket: SignalSocket) -> None:
        self.socket = socket
        self.pc: RTCPeerConnection | None = None
        self.video = FakeVideoTrack(160, 120, FPS)

    async def offer_to_recorder(self) -> dict[str, Any]:
        """Offers; returns the recorder's answer signal (ANSWER, or HANGUP if refused)."""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(self.video)
        self.pc.addTrack(FakeAudioTrack())
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = await self.socket.send(RECORDER_ID, "OFFER", sdp=self.pc.localDescription.sdp)
        assert body["data"]["sendWebrtcSignal"] is True, body
        reply = await self.socket.receive(timeout=15)
        assert reply["from"]["id"] == RECORDER_ID
        if reply["kind"] == "ANSWER":
            await self.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return reply

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        await self.socket.close()


async def connected(pc: RTCPeerConnection, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while pc.connectionState != "connected":
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def in_call(live: LiveServer, people: list[Persona], room_id: str
                  ) -> AsyncIterator[list[Client]]:
    clients = []
    try:
        for who in people:
            socket = await SignalSocket.open(live.ws_url, who, room_id)
            clients.append(Client(socket))
        await asyncio.sleep(0.2)
        for client in clients:
            client.socket.session_id = (await join(client.socket.who, room_id))["sessionId"]
        yield clients
    finally:
        for client in clients:
            await client.close()


def files_of(folder: Path, user_id: str) -> list[Path]:
    return sorted(folder.rglob(f"{user_id}-*.webm"))


async def test_only_consenting_participants_are_recorded(crowd: People,
                                                         recording_live: LiveServer) -> None:
    host, guest = crowd.make_user("doctor"), crowd.make_user("patient")
    await register(host, guest)
    room_id = (await make_room(host, invite=[guest], type="CONSULTATION"))["id"]
    folder = recording_live.settings.recording_dir
    assert (await failure(guest, START_RECORDING, room=room_id))["extensions"]["code"] == (
        "FORBIDDEN")  # a host starts it
    async with in_call(recording_live, [host, guest], room_id) as (mine, theirs):
        watcher = await connect(recording_live.ws_url, guest.token)
        await watcher.subscribe("ev", CALL_EVENTS, {"room": room_id})
        await asyncio.sleep(0.3)
        started = (await host.gql(START_RECORDING, room=room_id))["startRecording"]
        assert started["state"] == "RECORDING" and started["consents"] == []
        asked = await watcher.until("ev", lambda e: e["__typename"] ==
                                    "RecordingConsentRequested")
        assert asked[-1]["recording"]["requestedBy"]["id"] == host.id
        # No consent yet: the recorder refuses the guest's offer.
        assert (await theirs.offer_to_recorder())["kind"] == "HANGUP"
        consent = (await host.gql(CONSENT, room=room_id, granted=True))["giveRecordingConsent"]
        assert [(c["user"]["id"], c["granted"]) for c in consent["consents"]] == [
            (host.id, True)]
        assert (await mine.offer_to_recorder())["kind"] == "ANSWER"
        assert mine.pc is not None
        await connected(mine.pc)
        call = (await guest.gql(CALL, room=room_id))["room"]["call"]
        assert call["recording"]["state"] == "RECORDING"
        assert RECORDER_ID in [p["user"]["id"] for p in call["participants"]]
        await asyncio.sleep(3)
        # The host withdraws: their files end at once and grow no more.
        await host.gql(CONSENT, room=room_id, granted=False)
        await asyncio.sleep(0.5)
        sizes = {p: p.stat().st_size for p in files_of(folder, host.id)}
        await asyncio.sleep(1.0)
        assert sizes and {p: p.stat().st_size for p in sizes} == sizes
        assert not files_of(folder, guest.id)
        await host.gql(STOP_RECORDING, room=room_id)
        await watcher.close()
    recorded = await finished(recording_live, host.id)
    video = next(f for f in recorded if f.kind == "video")
    audio = next(f for f in recorded if f.kind == "audio")
    assert not video.empty and not audio.empty
    assert 2.5 * FPS <= video.frames <= 4.5 * FPS, video  # ~3 s at 10 fps until revoked
    assert 2.5 <= video.duration <= 4.5
    # Stored encrypted like a shared file of the room; the plaintext is gone.
    stored = await recordings_of(guest, room_id, 2)
    assert {f["uploadedBy"]["id"] for f in stored} == {RECORDER_ID}
    assert not video.path.exists() and not audio.path.exists()
    assert stat.S_IMODE(video.path.parent.stat().st_mode) == 0o700
    (kept,) = [f for f in stored if f["name"] == video.path.name]
    async with httpx.AsyncClient() as client:
        data = (await client.get(kept["downloadUrl"])).content
    with av.open(io.BytesIO(data)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == video.frames


async def recordings_of(who: Persona, room_id: str, count: int) -> list[dict[str, Any]]:
    query = ("query($r: ID!) { room(id: $r) { files { edges { node { name downloadUrl "
             "uploadedBy { id } } } } } }")
    async with asyncio.timeout(10):
        while True:
            edges = (await who.gql(query, r=room_id))["room"]["files"]["edges"]
            if len(edges) >= count:
                return [e["node"] for e in edges]
            await asyncio.sleep(0.2)


async def finished(live: LiveServer, user_id: str, timeout: float = 10) -> list[Any]:
    """The probed files of the room's recording once the recorder has stopped."""
    recordings = live.services.rtc.recordings
    async with asyncio.timeout(timeout):
        while True:
            files = [f for batch in list(recordings.finished.values()) for f in batch
                     if f.user_id == user_id]
            if files:
                return files
            await asyncio.sleep(0.1)


async def test_a_later_joiner_is_asked_and_leaving_ends_the_recording(
        crowd: People, recording_live: LiveServer) -> None:
    host, late = crowd.make_user("doctor"), crowd.make_user("doctor")
    await register(host, late)
    room_id = (await make_room(host, invite=[late]))["id"]
    async with in_call(recording_live, [host], room_id):
        await host.gql(START_RECORDING, room=room_id)
        async with in_call(recording_live, [late], room_id) as (joiner,):
            call = (await late.gql(CALL, room=room_id))["room"]["call"]
            me = next(p for p in call["participants"] if p["user"]["id"] == late.id)
            assert me["recordingConsent"] is None  # not recorded until they consent
            assert (await joiner.offer_to_recorder())["kind"] == "HANGUP"
            assert (await failure(late, START_RECORDING, room=room_id))["extensions"][
                "code"] == "FORBIDDEN"
            await late.gql("mutation($r: ID!) { leaveCall(roomId: $r) }", r=room_id)
        await host.gql("mutation($r: ID!) { leaveCall(roomId: $r) }", r=room_id)
        # The last one out: the call, and its recording, are over.
        assert (await host.gql(CALL, room=room_id))["room"]["call"] is None
    assert (await failure(host, CONSENT, room=room_id, granted=True))["extensions"][
        "code"] == "NOT_IN_CALL"


async def test_the_trail_records_calls_recordings_and_every_consent(
        crowd: People, recording_live: LiveServer) -> None:
    host, guest = crowd.make_user("doctor"), crowd.make_user("doctor")
    admin = crowd.make_user("admin")
    await register(host, guest, admin)
    room_id = (await make_room(host, invite=[guest]))["id"]
    async with in_call(recording_live, [host, guest], room_id):
        await host.gql(START_RECORDING, room=room_id)
        await guest.gql(CONSENT, room=room_id, granted=True)
        await guest.gql(CONSENT, room=room_id, granted=False)
        await host.gql(STOP_RECORDING, room=room_id)
        await guest.gql("mutation($id: ID!) { leaveRoom(id: $id) { id } }", id=room_id)
    records = await trail(recording_live, admin, roomId=room_id)
    seen = [(r["action"], r["actorId"], r["code"]) for r in reversed(records)
            if r["action"].startswith(("mutation.", "call."))
            and "Room" not in r["action"] and r["action"] != "mutation.createRoom"]
    assert seen == [
        ("mutation.joinCall", host.id, None), ("mutation.joinCall", guest.id, None),
        ("mutation.startRecording", host.id, None),
        ("mutation.giveRecordingConsent", guest.id, None),
        ("mutation.giveRecordingConsent", guest.id, None),
        ("mutation.stopRecording", host.id, None),
        ("call.leave", guest.id, "left_room"),
    ]

"""Real aiortc peers in a call, signalling only through the service (tests/call_peer.py):
loopback host candidates, relay only through a real coturn with the credentials joinCall
hands out, an expired credential, a three-party mesh, the screen-share quality as the
viewer receives it, and leaving. Media is synthetic (tests/media.py) and small: every peer
and the service share this process (../shared/notes/calls.md §2e: 3 peers at 640x360 take
about one core)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection

from rtc import turn
from tests.call_helpers import CALL_EVENTS, LEAVE, SHARE, TUNE, metric
from tests.call_peer import (
    CallPeer,
    CapTrack,
    ConfigOf,
    Tracks,
    loopback,
    no_tracks,
    selected_pair,
    wait_until,
)
from tests.conftest import make_settings
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.media import FakeAudioTrack, FakeVideoTrack, patch_loopback
from tests.personas import People, Persona, make_room
from tests.turn import TurnServer
from tests.wsclient import WSClient, connect

USERNAME = re.compile(r"\d+:[0-9a-f]{16}")
# How long a peer waits for a connection before calling it failed: with a refused TURN
# credential there is no candidate, aiortc never starts ICE and stays "new" for good.
OWN_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def live(turn_server: TurnServer, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[LiveServer]:
    """One service for the module, minting credentials for the session's coturn; no STUN
    (there is no reachable one here, and relay-only peers would not use it)."""
    settings = make_settings(tmp_path_factory.mktemp("call-peers"),
                             turn_server_url=turn_server.url, turn_secret=turn_server.secret,
                             stun_servers=[])
    server = LiveServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host candidates on 127.0.0.1 (aioice leaves it out); relay-only peers gather none,
    but should the policy be ignored they would connect host/host and the relay assertions
    would catch it."""
    patch_loopback(monkeypatch)


class Party:
    """Personas and their peers; everything opened is closed at the end of the test (PCs,
    sockets, clients), each even when closing another fails."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.people = People(live.settings, live.url)
        self.closing = contextlib.AsyncExitStack()
        self.closing.push_async_callback(self.people.aclose)  # last: peers still use them

    async def room(self, n: int) -> tuple[list[Persona], str]:
        members = [self.people.make_user("doctor") for _ in range(n)]
        await register(*members)
        room = await make_room(members[0], invite=members[1:])
        return members, room["id"]

    def peer(self, who: Persona, room_id: str, *, config: ConfigOf = loopback,
             tracks: Tracks = no_tracks) -> CallPeer:
        peer = CallPeer(self.live, who, room_id, config=config, tracks=tracks)
        self.closing.push_async_callback(peer.close)
        return peer

    async def events(self, who: Persona, room_id: str) -> WSClient:
        socket = await connect(self.live.ws_url, who.token)
        self.closing.push_async_callback(socket.close)
        await socket.subscribe("ev", CALL_EVENTS, {"room": room_id})
        return socket


@pytest.fixture
async def party(live: LiveServer) -> AsyncIterator[Party]:
    party = Party(live)
    try:
        yield party
    finally:
        await party.closing.aclose()


def camera(width: int, height: int, fps: float) -> Tracks:
    return lambda: [FakeVideoTrack(width, height, fps), FakeAudioTrack()]


def connections(outcome: str, candidate: str) -> str:
    return f'collab_webrtc_connections_total{{candidate="{candidate}",outcome="{outcome}"}}'


async def pair(party: Party, room_id: str, a: Persona, b: Persona, *,
               config: ConfigOf = loopback, tracks: Tracks = no_tracks
               ) -> tuple[CallPeer, CallPeer]:
    """`a` joins an empty call, `b` joins and offers to `a` (the joiner offers)."""
    first = party.peer(a, room_id, config=config, tracks=tracks)
    assert (await first.join())["peers"] == []
    second = party.peer(b, room_id, config=config, tracks=tracks)
    session = await second.join()
    assert [p["user"]["id"] for p in session["peers"]] == [a.id]
    await second.call_peers()
    return first, second


# -- 1. loopback -------------------------------------------------------------------------

async def test_two_peers_connect_over_loopback(party: Party, live: LiveServer) -> None:
    (host, guest), room_id = await party.room(2)
    before = await metric(live, connections("connected", "host"))
    a, b = await pair(party, room_id, host, guest, tracks=camera(320, 240, 15))
    assert await a.settle(guest.id) and await b.settle(host.id)
    for peer, other in ((a, guest), (b, host)):
        assert peer.links[other.id].pc.connectionState == "connected"
        assert await peer.links[other.id].ping() == "pong 1"
    assert await metric(live, connections("connected", "host")) == before + 2
    # Only the service carried the negotiation, and no ICE_CANDIDATE (aiortc does not trickle).
    assert [(s["kind"], s["sessionId"]) for s in a.signals] == [("OFFER", b.session_id)]
    assert [(s["kind"], s["sessionId"]) for s in b.signals] == [("ANSWER", a.session_id)]
    assert selected_pair(a.links[guest.id].pc) == ("host", "host")
    assert selected_pair(b.links[host.id].pc) == ("host", "host")
    # Both directions at once, 2 s each (15 fps sent).
    received = await asyncio.gather(a.links[guest.id].sinks["video"].measure(2.0),
                                    b.links[host.id].sinks["video"].measure(2.0))
    assert all(fps >= 10 and sizes == {(320, 240)} for fps, sizes in received), received
    assert a.links[guest.id].sinks["audio"].frames and b.links[host.id].sinks["audio"].frames


# -- 2. relay only, with the service's credentials ---------------------------------------

def relay_only(session_config: dict[str, Any]) -> RTCConfiguration:
    """The TURN server of joinCall's rtcConfiguration, relay candidates only. aiortc uses one
    TURN url per server (../shared/notes/calls.md §2b): the UDP one."""
    (server,) = [s for s in session_config["iceServers"] if s["username"]]
    (url,) = [u for u in server["urls"] if u.endswith("?transport=udp")]
    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=url, username=server["username"],
                                 credential=server["credential"])],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def relay_candidates(peer: CallPeer, user_id: str) -> list[str]:
    description = peer.links[user_id].pc.localDescription
    assert description is not None
    return [line for line in description.sdp.splitlines()
            if line.startswith("a=candidate:")]


async def test_relay_only_through_coturn_with_the_services_credentials(
        party: Party, live: LiveServer, turn_server: TurnServer) -> None:
    (host, guest), room_id = await party.room(2)
    before = await metric(live, connections("connected", "relay"))
    a, b = await pair(party, room_id, host, guest, config=relay_only)
    assert await a.settle(guest.id) and await b.settle(host.id)
    for peer, other in ((a, guest), (b, host)):
        found = relay_candidates(peer, other.id)
        assert found and all(" typ relay" in line for line in found), found
        assert selected_pair(peer.links[other.id].pc) == ("relay", "relay")
        assert await peer.links[other.id].ping() == "pong 1"
    assert await metric(live, connections("connected", "relay")) == before + 2
    # coturn logs the TURN username of every request: the opaque minted one, no user id.
    for peer in (a, b):
        (server,) = peer.session["rtcConfiguration"]["iceServers"]
        assert USERNAME.fullmatch(server["username"]), server["username"]
        turn_server.log_line(f"user <{server['username']}>", "ALLOCATE processed, success")
    log = turn_server.log_text()
    assert host.id not in log and guest.id not in log
    assert host.name not in log and guest.name not in log


# -- 3. an expired credential ------------------------------------------------------------

async def test_an_expired_credential_never_connects_and_is_reported(
        party: Party, live: LiveServer, turn_server: TurnServer) -> None:
    """The joiner holds a credential that expired a minute ago (correctly signed with the
    service's secret: the setting's minimum TTL is 60 s, so minted by hand). The joiner, so
    that coturn's refusal is of that username: a valid answerer never even allocates when
    the offer has no candidate (tests/test_turn_credentials.py)."""
    (host, guest), room_id = await party.room(2)
    username, credential = turn.mint(turn_server.secret, secrets.token_hex(8),
                                     int(time.time()) - 60)

    def expired(session_config: dict[str, Any]) -> RTCConfiguration:
        config = relay_only(session_config)
        assert config.iceServers is not None
        server = config.iceServers[0]
        server.username, server.credential = username, credential
        return config

    before = await metric(live, connections("failed", "unknown"))
    first = party.peer(host, room_id, config=relay_only)
    await first.join()
    joiner = party.peer(guest, room_id, config=expired)
    await joiner.join()
    await joiner.call_peers()
    assert relay_candidates(joiner, host.id) == []  # coturn refused the allocation
    assert await joiner.settle(host.id, timeout=OWN_TIMEOUT) is False
    assert joiner.links[host.id].pc.connectionState == "new"
    assert first.links[guest.id].pc.connectionState != "connected"
    assert await metric(live, connections("failed", "unknown")) == before + 1
    turn_server.log_line(f"user <{username}>", "error 401: Unauthorized")


# -- 4. a three-party mesh ---------------------------------------------------------------

async def test_three_join_in_turn_and_form_a_full_mesh(party: Party) -> None:
    people, room_id = await party.room(3)
    peers: list[CallPeer] = []
    for who in people:  # in turn: each joiner offers to everyone already in
        peer = party.peer(who, room_id, tracks=camera(160, 120, 10))
        session = await peer.join()
        assert [p["user"]["id"] for p in session["peers"]] == [p.who.id for p in peers]
        await peer.call_peers()
        peers.append(peer)
    for peer in peers:
        for other in people:
            if other is not peer.who:
                assert await peer.settle(other.id)
                assert await peer.links[other.id].ping() == "pong 1"
    # Every peer receives audio and video from both others (10 fps sent).
    received = await asyncio.gather(*(
        link.sinks["video"].measure(1.5) for peer in peers for link in peer.links.values()))
    assert all(fps >= 6 and sizes == {(160, 120)} for fps, sizes in received), received
    assert all(link.sinks["audio"].frames for peer in peers for link in peer.links.values())
    # Joiners offered, the earlier ones answered: 3 OFFERs and 3 ANSWERs in all.
    kinds = sorted(s["kind"] for peer in peers for s in peer.signals)
    assert kinds == ["ANSWER"] * 3 + ["OFFER"] * 3


# -- 5. screen-share quality, as received ------------------------------------------------

async def test_the_viewer_receives_the_screen_share_quality(party: Party) -> None:
    (viewer_who, presenter_who), room_id = await party.room(2)
    viewer = party.peer(viewer_who, room_id)
    await viewer.join(video=False)
    events = await party.events(viewer_who, room_id)
    screen = CapTrack(FakeVideoTrack(1280, 720, 15))
    presenter = party.peer(presenter_who, room_id, tracks=lambda: [screen])
    await presenter.join(audio=False)
    shared = (await presenter_who.gql(SHARE, room=room_id, preset="H360FPS3"))
    screen.apply(shared["startScreenShare"]["quality"])
    await presenter.call_peers()
    assert await presenter.settle(viewer_who.id) and await viewer.settle(presenter_who.id)
    sink = (await viewer.link(presenter_who.id)).sinks["video"]
    fps, sizes = await sink.measure(3.0)
    assert sizes == {(640, 360)} and abs(fps - 3) <= 1, (fps, sizes)

    tuned = await presenter_who.gql(TUNE, room=room_id, preset="H720FPS5")
    quality = tuned["updateScreenShareQuality"]["quality"]
    seen = await events.until("ev", lambda e: e["__typename"] == "ScreenShareChanged"
                              and e["screenShare"]["quality"]["preset"] == "H720FPS5")
    assert seen[-1]["screenShare"]["presenter"]["id"] == presenter_who.id
    assert seen[-1]["screenShare"]["quality"] == {"width": 1280, "height": 720,
                                                  "frameRate": 5, "preset": "H720FPS5"}
    screen.apply(quality)
    fps, sizes = await sink.measure(3.0, size=(1280, 720))
    assert sizes == {(1280, 720)} and abs(fps - 5) <= 1, (fps, sizes)
    # What a viewer reports of a received screen share (the service's quality metrics).
    assert await viewer.settle(presenter_who.id, frameRate=fps, width=1280, height=720,
                               screenShare=True)


# -- 6. leaving --------------------------------------------------------------------------

async def test_leaving_stops_delivery(party: Party) -> None:
    (host, guest), room_id = await party.room(2)
    a, b = await pair(party, room_id, host, guest)
    assert await a.settle(guest.id) and await b.settle(host.id)
    # B hangs up, as a client does before leaving: A closes that connection.
    await b.send(host.id, "HANGUP")
    await b.links[host.id].close()
    assert await wait_closed(a, guest.id)
    # B's closed connection may end A's before the HANGUP arrives: wait for the signal.
    async with asyncio.timeout(5):
        while [s["kind"] for s in a.signals] != ["OFFER", "HANGUP"]:
            await asyncio.sleep(0.05)
    assert (await guest.gql(LEAVE, room=room_id))["leaveCall"] is True
    assert b.socket is not None
    received = len(b.signals)
    for kind, sdp in (("HANGUP", None), ("OFFER", await fresh_offer())):
        assert a.socket is not None
        body = await a.socket.send(guest.id, kind, sdp=sdp)
        assert body["data"] is None, body
        (error,) = body["errors"]
        assert (error["extensions"]["code"], error["extensions"]["who"]) == (
            "NOT_IN_CALL", "recipient"), body
    await b.socket.ws.quiet(0.5, id=b.socket.op)
    assert len(b.signals) == received


async def wait_closed(peer: CallPeer, user_id: str) -> bool:
    return await wait_until(lambda: peer.links[user_id].pc.connectionState == "closed", 5.0)


async def fresh_offer() -> str:
    """A real offer for calling back, made outside CallPeer (which asserts delivery)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()

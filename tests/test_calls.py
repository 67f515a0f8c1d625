"""Calls as room state, over the real API: joining (peers, ICE configuration, the mesh's
video cap), leaving (by hand, and by losing the last signal socket after the grace), media
state, room events, signals (addressed, ordered, never to the room, limits) and who may do
what. Media itself: tests/test_call_peers.py (aiortc), tests/test_call_browser.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.call_helpers import (
    CALL,
    CALL_EVENTS,
    LEAVE,
    MEDIA,
    RTC_CONFIG,
    SHARE,
    START_RECORDING,
    STATS,
    TUNE,
    UNSHARE,
    SignalSocket,
    join,
    metric,
)
from tests.conftest import make_settings
from tests.gql_helpers import failure, register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.wsclient import WSClient, connect

GRACE = 0.5
TURN_SECRET = "turn-secret-for-tests-0123456789"
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.fixture(scope="module")
def calls_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("calls"), call_grace_seconds=GRACE, call_max_video=2,
        signal_rate=2.0, signal_burst=10, turn_server_url="turn:127.0.0.1:3478",
        turns_server_url="turns:turn.example.org:5349", turn_secret=TURN_SECRET,
        turn_credential_ttl=600, stun_servers=["stun:127.0.0.1:3478"])
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture
async def crowd(calls_live: LiveServer) -> AsyncIterator[People]:
    people = People(calls_live.settings, calls_live.url)
    yield people
    await people.aclose()


async def consultation(people: People, n: int = 2) -> tuple[list[Persona], str, Persona]:
    """A room of `n` doctors (the first hosts) and an outsider."""
    members = [people.make_user("doctor") for _ in range(n)]
    outsider = people.make_user("doctor")
    await register(*members, outsider)
    room = await make_room(members[0], invite=members[1:])
    return members, room["id"], outsider


async def code_of(who: Persona, query: str, **variables: object) -> str:
    error = await failure(who, query, **variables)
    code: str = error["extensions"]["code"]
    return code


async def events(live: LiveServer, who: Persona, room_id: str) -> WSClient:
    ws = await connect(live.ws_url, who.token)
    await ws.subscribe("ev", CALL_EVENTS, {"room": room_id})
    await asyncio.sleep(0.3)  # attached
    return ws


def of_type(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["__typename"] == name


# -- ICE configuration -------------------------------------------------------------------

async def test_rtc_configuration_mints_turn_credentials_for_participants(
        crowd: People) -> None:
    (host, _), room_id, outsider = await consultation(crowd)
    before = int(time.time())
    config = (await host.gql(RTC_CONFIG, room=room_id))["rtcConfiguration"]
    stun, relay = config["iceServers"]
    assert stun == {"urls": ["stun:127.0.0.1:3478"], "username": None, "credential": None}
    assert relay["urls"] == ["turn:127.0.0.1:3478?transport=udp",
                             "turn:127.0.0.1:3478?transport=tcp",
                             "turns:turn.example.org:5349"]
    expiry, opaque = relay["username"].split(":")
    assert before + 600 <= int(expiry) <= int(time.time()) + 600
    assert host.id not in relay["username"] and len(opaque) == 16  # coturn logs it
    digest = hmac.new(TURN_SECRET.encode(), relay["username"].encode(), hashlib.sha1).digest()
    assert relay["credential"] == base64.b64encode(digest).decode()
    assert int(datetime.fromisoformat(config["expiresAt"]).timestamp()) == int(expiry)
    # Without a room: STUN only (a relay is for a room's participants); outsiders: NOT_FOUND.
    plain = (await outsider.gql(RTC_CONFIG, room=None))["rtcConfiguration"]
    assert [s["urls"] for s in plain["iceServers"]] == [["stun:127.0.0.1:3478"]]
    assert await code_of(outsider, RTC_CONFIG, room=room_id) == "NOT_FOUND"
    again = (await host.gql(RTC_CONFIG, room=room_id))["rtcConfiguration"]
    assert again["iceServers"][1]["username"] != relay["username"]  # fresh on every fetch


# -- joining and leaving -----------------------------------------------------------------

async def test_join_returns_the_session_peers_and_configuration(crowd: People,
                                                                calls_live: LiveServer) -> None:
    (host, guest), room_id, _ = await consultation(crowd)
    watcher = await events(calls_live, guest, room_id)
    first = await join(host, room_id)
    assert first["peers"] == [] and first["videoAllowed"] is True
    assert first["rtcConfiguration"]["iceServers"][1]["username"]
    joined = await watcher.until("ev", of_type("CallParticipantJoined"))
    assert joined[-1]["participant"]["user"]["id"] == host.id
    second = await join(guest, room_id, video=False)
    assert [p["user"]["id"] for p in second["peers"]] == [host.id]
    assert second["peers"][0]["sessionId"] == first["sessionId"]
    call = (await host.gql(CALL, room=room_id))["room"]["call"]
    assert [(p["user"]["id"], p["video"]) for p in call["participants"]] == [
        (host.id, True), (guest.id, False)]
    # Leaving: the event, then the call is empty (null).
    assert (await host.gql(LEAVE, room=room_id))["leaveCall"] is True
    left = await watcher.until("ev", of_type("CallParticipantLeft"))
    assert left[-1] == {"__typename": "CallParticipantLeft", "reason": "left",
                        "user": {"id": host.id}}
    assert (await host.gql(LEAVE, room=room_id))["leaveCall"] is False
    await guest.gql(LEAVE, room=room_id)
    assert (await host.gql(CALL, room=room_id))["room"]["call"] is None
    await watcher.close()


async def test_only_participants_call_and_see_the_call(crowd: People) -> None:
    (host, _), room_id, outsider = await consultation(crowd)
    await join(host, room_id)
    assert await code_of(outsider, "mutation($r: ID!) { joinCall(roomId: $r) { sessionId } }",
                         r=room_id) == "NOT_FOUND"
    public = await make_room(host, visibility="PUBLIC", name="Lecture")
    await join(host, public["id"])
    # A visitor of a public room sees the room, not who is in its call.
    seen = (await outsider.gql(CALL, room=public["id"]))["room"]
    assert seen["call"] is None and seen["screenShare"]["active"] is False
    assert await code_of(outsider, "mutation($r: ID!) { joinCall(roomId: $r) { sessionId } }",
                         r=public["id"]) == "FORBIDDEN"


async def test_the_mesh_caps_video_senders(crowd: People) -> None:
    people, room_id, _ = await consultation(crowd, 3)
    a, b, c = people
    assert (await join(a, room_id))["videoAllowed"] is True
    assert (await join(b, room_id))["videoAllowed"] is True
    third = await join(c, room_id)  # CALL_MAX_VIDEO = 2 here: audio-only
    assert third["videoAllowed"] is False and third["call"]["maxVideo"] == 2
    me = next(p for p in third["call"]["participants"] if p["user"]["id"] == c.id)
    assert me["video"] is False and me["audio"] is True
    assert await code_of(c, MEDIA, room=room_id, video=True) == "VIDEO_LIMIT_REACHED"
    await a.gql(MEDIA, room=room_id, video=False)  # a camera goes off: room for one more
    turned = (await c.gql(MEDIA, room=room_id, video=True))["updateMediaState"]
    assert turned["video"] is True


async def test_media_state_changes_are_room_events(crowd: People,
                                                   calls_live: LiveServer) -> None:
    (host, guest), room_id, _ = await consultation(crowd)
    await join(host, room_id)
    watcher = await events(calls_live, guest, room_id)
    muted = (await host.gql(MEDIA, room=room_id, audio=False))["updateMediaState"]
    assert (muted["audio"], muted["video"]) == (False, True)
    event = (await watcher.until("ev", of_type("MediaStateChanged")))[-1]
    assert event["participant"]["audio"] is False
    assert event["participant"]["user"]["id"] == host.id
    assert await code_of(guest, MEDIA, room=room_id, audio=False) == "NOT_IN_CALL"
    await watcher.close()


async def test_losing_the_last_signal_socket_leaves_the_call_after_the_grace(
        crowd: People, calls_live: LiveServer) -> None:
    (host, guest), room_id, _ = await consultation(crowd)
    watcher = await events(calls_live, host, room_id)
    first = await SignalSocket.open(calls_live.ws_url, guest, room_id)
    second = await SignalSocket.open(calls_live.ws_url, guest, room_id)
    await asyncio.sleep(0.2)
    await join(guest, room_id)
    await first.close()  # one socket left: still in
    await asyncio.sleep(GRACE * 3)
    assert len((await host.gql(CALL, room=room_id))["room"]["call"]["participants"]) == 1
    await second.close()
    # Back within the grace: stays.
    third = await SignalSocket.open(calls_live.ws_url, guest, room_id)
    await asyncio.sleep(GRACE * 3)
    assert (await host.gql(CALL, room=room_id))["room"]["call"] is not None
    await third.close()
    left = await watcher.until("ev", of_type("CallParticipantLeft"), timeout=GRACE * 10)
    assert left[-1]["reason"] == "disconnected" and left[-1]["user"]["id"] == guest.id
    assert (await host.gql(CALL, room=room_id))["room"]["call"] is None
    await watcher.close()


async def test_leaving_the_room_leaves_the_call(crowd: People, calls_live: LiveServer) -> None:
    (host, guest), room_id, _ = await consultation(crowd)
    await join(host, room_id)
    await join(guest, room_id)
    watcher = await events(calls_live, host, room_id)
    await guest.gql("mutation($id: ID!) { leaveRoom(id: $id) { id } }", id=room_id)
    left = await watcher.until("ev", of_type("CallParticipantLeft"))
    assert left[-1]["reason"] == "left_room"
    await watcher.close()
    call = (await host.gql(CALL, room=room_id))["room"]["call"]
    assert [p["user"]["id"] for p in call["participants"]] == [host.id]


async def test_a_closed_rooms_call_ends(crowd: People, calls_live: LiveServer) -> None:
    (host, guest), room_id, _ = await consultation(crowd)
    await join(host, room_id)
    await join(guest, room_id)
    await host.gql("mutation($id: ID!) { deleteRoom(id: $id) }", id=room_id)
    assert calls_live.call(calls_live.services.rtc.calls.state(room_id)).empty


# -- signals -----------------------------------------------------------------------------

async def call_of_two(crowd: People, live: LiveServer
                      ) -> tuple[SignalSocket, SignalSocket, str, Persona]:
    (host, guest), room_id, outsider = await consultation(crowd)
    a = await SignalSocket.open(live.ws_url, host, room_id)
    b = await SignalSocket.open(live.ws_url, guest, room_id)
    await asyncio.sleep(0.2)
    a.session_id = (await join(host, room_id))["sessionId"]
    b.session_id = (await join(guest, room_id))["sessionId"]
    return a, b, room_id, outsider


async def test_signals_reach_the_addressee_only_in_order(crowd: People,
                                                         calls_live: LiveServer) -> None:
    a, b, room_id, _ = await call_of_two(crowd, calls_live)
    third = crowd.make_user("doctor")
    await register(third)
    await a.who.gql("mutation($r: ID!, $u: [ID!]!) { inviteToRoom(roomId: $r, userIds: $u) "
                    "{ id } }", r=room_id, u=[third.id])
    c = await SignalSocket.open(calls_live.ws_url, third, room_id)
    room_watch = await events(calls_live, third, room_id)
    c.session_id = (await join(third, room_id))["sessionId"]
    candidate = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
                 "sdpMid": "0", "sdpMLineIndex": 0}
    assert (await a.send(b.who.id, "OFFER", sdp=OFFER))["data"]["sendWebrtcSignal"] is True
    for _ in range(3):
        await a.send(b.who.id, "ICE_CANDIDATE", candidate=candidate)
    got = [await b.receive() for _ in range(4)]
    assert [s["kind"] for s in got] == ["OFFER"] + ["ICE_CANDIDATE"] * 3
    assert got[0]["sdp"] == OFFER and got[0]["from"]["id"] == a.who.id
    assert got[0]["sessionId"] == a.session_id and got[1]["candidate"] == candidate
    await c.ws.quiet(0.5, id=c.op)  # not the addressee: nothing
    await a.ws.quiet(0.1, id=a.op)  # nor the sender
    # Never fanned out to the room: the room stream carried no signal.
    assert all("sdp" not in str(m) for m in room_watch.pending("ev"))
    await b.send(a.who.id, "HANGUP")
    assert (await a.receive())["kind"] == "HANGUP"
    for sock in (a, b, c):
        await sock.close()
    await room_watch.close()


async def test_signals_only_inside_the_call(crowd: People, calls_live: LiveServer) -> None:
    a, b, room_id, outsider = await call_of_two(crowd, calls_live)
    codes = []
    for body in (await a.send(b.who.id, "HANGUP", session_id="not-my-session"),
                 await a.send(outsider.id, "HANGUP"),
                 await a.send(a.who.id, "HANGUP")):
        codes.append(body["errors"][0]["extensions"])
    assert [(c["code"], c["who"]) for c in codes] == [
        ("NOT_IN_CALL", "sender"), ("NOT_IN_CALL", "recipient"), ("NOT_IN_CALL", "recipient")]
    stranger = SignalSocket(outsider, room_id, a.ws, a.op)
    stranger.session_id = a.session_id
    assert (await stranger.send(b.who.id, "HANGUP"))["errors"][0]["extensions"]["code"] == (
        "NOT_FOUND")
    # Leaving stops delivery: signals to them are refused, theirs too.
    await b.who.gql(LEAVE, room=room_id)
    assert (await a.send(b.who.id, "HANGUP"))["errors"][0]["extensions"]["code"] == (
        "NOT_IN_CALL")
    assert (await b.send(a.who.id, "HANGUP"))["errors"][0]["extensions"]["code"] == (
        "NOT_IN_CALL")
    await b.ws.quiet(0.3, id=b.op)
    # The outsider cannot even subscribe.
    sneaky = await SignalSocket.open(calls_live.ws_url, outsider, room_id)
    assert await sneaky.ws.error(sneaky.op) == ["NOT_FOUND"]
    for sock in (a, b, sneaky):
        await sock.close()


@pytest.mark.parametrize(("kind", "fields", "field"), [
    ("OFFER", {}, "sdp"),
    ("ANSWER", {"sdp": OFFER, "candidate": {"candidate": ""}}, "sdp"),
    ("ICE_CANDIDATE", {}, "candidate"),
    ("ICE_CANDIDATE", {"candidate": {"candidate": "x"}, "sdp": OFFER}, "candidate"),
    ("HANGUP", {"sdp": OFFER}, "kind"),
    ("OFFER", {"sdp": "v=0\r\n" + "a=x\r\n" * 4000}, "sdp"),  # over 16 KB
    ("ICE_CANDIDATE", {"candidate": {"candidate": "c" * 1100}}, "candidate"),  # over 1 KB
])
async def test_signal_fields_must_match_their_kind(crowd: People, calls_live: LiveServer,
                                                   kind: str, fields: dict[str, object],
                                                   field: str) -> None:
    a, b, _, _ = await call_of_two(crowd, calls_live)
    body = await a.send(b.who.id, kind, **fields)  # type: ignore[arg-type]
    error = body["errors"][0]
    assert (error["extensions"]["code"], error["extensions"]["field"]) == (
        "BAD_USER_INPUT", field)
    await b.ws.quiet(0.2, id=b.op)
    await a.close()
    await b.close()


async def test_a_session_signals_at_a_bounded_rate(crowd: People,
                                                   calls_live: LiveServer) -> None:
    a, b, _, _ = await call_of_two(crowd, calls_live)
    bodies = [await a.send(b.who.id, "HANGUP") for _ in range(14)]  # burst 10, 2/s
    refused = [body["errors"][0]["extensions"] for body in bodies if body.get("errors")]
    assert 2 <= len(refused) <= 4
    assert all(r["code"] == "RATE_LIMITED" and r["retryAfter"] >= 1 for r in refused)
    delivered = [await b.receive() for _ in range(len(bodies) - len(refused))]
    assert {s["kind"] for s in delivered} == {"HANGUP"}
    await a.close()
    await b.close()


# -- screen sharing ----------------------------------------------------------------------

async def test_one_presenter_at_a_time(crowd: People, calls_live: LiveServer) -> None:
    people, room_id, _ = await consultation(crowd, 3)
    host, a, b = people
    for who in people:
        await join(who, room_id)
    watcher = await events(calls_live, host, room_id)
    # Two concurrent starts: one winner, the other PRESENTER_BUSY.
    bodies = await asyncio.gather(*(who.post(SHARE, {"room": room_id}) for who in (a, b)))
    winners = [body for body in bodies if not body.get("errors")]
    losers = [body["errors"][0]["extensions"] for body in bodies if body.get("errors")]
    assert len(winners) == 1 and len(losers) == 1
    presenter = winners[0]["data"]["startScreenShare"]["presenter"]["id"]
    assert losers[0] == {"code": "PRESENTER_BUSY", "presenterId": presenter}
    share = winners[0]["data"]["startScreenShare"]
    assert share["quality"] == {"width": 1920, "height": 1080, "frameRate": 15,
                                "maxBitrateKbps": 2500, "preset": "H1080FPS15"}
    event = (await watcher.until("ev", of_type("ScreenShareChanged")))[-1]
    assert event["screenShare"]["presenter"]["id"] == presenter
    # A member cannot take over; the host can.
    other = b if presenter == a.id else a
    busy = await code_of(other, SHARE, room=room_id, takeOver=True)
    assert busy == "PRESENTER_BUSY"
    taken = (await host.gql(SHARE, room=room_id, takeOver=True,
                            preset="H720FPS5"))["startScreenShare"]
    assert taken["presenter"]["id"] == host.id and taken["quality"]["frameRate"] == 5
    room = (await other.gql(CALL, room=room_id))["room"]
    assert room["screenShare"]["presenter"]["id"] == host.id
    assert room["screenShare"]["quality"]["preset"] == "H720FPS5"
    await watcher.close()


async def test_quality_presets_custom_bounds_and_who_tunes(crowd: People,
                                                           calls_live: LiveServer) -> None:
    people, room_id, _ = await consultation(crowd, 3)
    host, presenter, member = people
    for who in people:
        await join(who, room_id)
    await presenter.gql(SHARE, room=room_id, preset="H360FPS3")
    watcher = await events(calls_live, member, room_id)
    custom = {"width": 1280, "height": 720, "frameRate": 10, "maxBitrateKbps": 900}
    tuned = (await presenter.gql(TUNE, room=room_id, quality=custom))
    assert tuned["updateScreenShareQuality"]["quality"] == {**custom, "preset": None}
    event = (await watcher.until("ev", of_type("ScreenShareChanged")))[-1]
    assert event["screenShare"]["quality"]["frameRate"] == 10
    for bad, field in (({**custom, "width": 3840}, "quality.width"),
                       ({**custom, "frameRate": 60}, "quality.frameRate"),
                       ({**custom, "maxBitrateKbps": 8000}, "quality.maxBitrateKbps")):
        error = await failure(presenter, TUNE, room=room_id, quality=bad)
        assert (error["extensions"]["code"], error["extensions"]["field"]) == (
            "BAD_USER_INPUT", field)
    error = await failure(presenter, TUNE, room=room_id, quality=custom, preset="H360FPS3")
    assert error["extensions"]["field"] == "preset"
    assert await code_of(member, TUNE, room=room_id, preset="H1080FPS30") == "FORBIDDEN"
    moderated = (await host.gql(TUNE, room=room_id, preset="H720FPS15"))
    assert moderated["updateScreenShareQuality"]["quality"]["preset"] == "H720FPS15"
    assert await code_of(member, UNSHARE, room=room_id) == "FORBIDDEN"
    assert (await presenter.gql(UNSHARE, room=room_id))["stopScreenShare"]["active"] is False
    seen = await watcher.until("ev", lambda e: e["__typename"] == "ScreenShareChanged"
                               and not e["screenShare"]["active"])
    assert seen[-1]["screenShare"] == {"active": False, "presenter": None, "quality": None}
    assert await code_of(host, TUNE, room=room_id, preset="H720FPS15") == "NOT_IN_CALL"
    await watcher.close()


async def test_a_share_ends_when_its_presenter_leaves(crowd: People,
                                                     calls_live: LiveServer) -> None:
    (host, guest), room_id, outsider = await consultation(crowd)
    await join(host, room_id)
    assert await code_of(guest, SHARE, room=room_id) == "NOT_IN_CALL"
    assert await code_of(outsider, SHARE, room=room_id) == "NOT_FOUND"
    await join(guest, room_id)
    await guest.gql(SHARE, room=room_id)
    watcher = await events(calls_live, host, room_id)
    await guest.gql(LEAVE, room=room_id)
    seen = await watcher.until("ev", of_type("ScreenShareChanged"))
    assert seen[-1]["screenShare"]["active"] is False
    assert (await host.gql(CALL, room=room_id))["room"]["screenShare"]["active"] is False
    await watcher.close()


async def test_turned_off_features_say_so(crowd: People, calls_live: LiveServer) -> None:
    (host, _), room_id, _ = await consultation(crowd)
    await join(host, room_id)
    screens = calls_live.services.rtc.screens
    screens.enabled = False
    try:
        error = await failure(host, SHARE, room=room_id)
    finally:
        screens.enabled = True
    assert error["extensions"] == {"code": "FEATURE_DISABLED", "feature": "screenSharing"}
    error = await failure(host, START_RECORDING, room=room_id)  # off by default
    assert error["extensions"] == {"code": "FEATURE_DISABLED", "feature": "recording"}


# -- quality reports -----------------------------------------------------------------------

async def test_call_stats_feed_the_metrics(crowd: People, calls_live: LiveServer) -> None:
    (host, guest), room_id, _ = await consultation(crowd)
    session = (await join(host, room_id))["sessionId"]
    report = {"roomId": room_id, "sessionId": session, "connected": True,
              "localCandidateType": "relay", "remoteCandidateType": "host",
              "roundTripMs": 42.0, "packetsLost": 1, "packetsReceived": 99,
              "bitrateKbps": 380.0, "frameRate": 14.5, "width": 640, "height": 360,
              "screenShare": True}
    before = await metric(calls_live, 'collab_webrtc_connections_total{candidate="relay",'
                                      'outcome="connected"}')
    assert (await host.gql(STATS, input=report))["reportCallStats"] is True
    await host.gql(STATS, input={**report, "connected": False, "localCandidateType": None})
    after = await metric(calls_live, 'collab_webrtc_connections_total{candidate="relay",'
                                     'outcome="connected"}')
    assert after == before + 1
    assert await metric(calls_live, "collab_screen_share_frame_rate_count") >= 1
    error = await failure(host, STATS, input={**report, "frameRate": 1000})
    assert error["extensions"]["field"] == "input.frameRate"
    error = await failure(host, STATS, input={**report, "localCandidateType": "bogus"})
    assert error["extensions"]["field"] == "input.localCandidate"
    assert await code_of(guest, STATS, input=report) == "NOT_IN_CALL"
    codes = [await code_of(host, STATS, input=report) for _ in range(9)
             if (await host.post(STATS, {"input": report})).get("errors")]
    assert codes and set(codes) == {"RATE_LIMITED"}

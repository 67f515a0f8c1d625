"""Calls across instances (three `python -m app` processes sharing one graph database and
one Redis): signals reach their addressee on another instance in order, the presenter slot
has one winner whichever instances race for it, a participant's socket on one instance keeps
them in the call that another serves, and a crashed instance's participants go stale."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.call_helpers import CALL, CALL_EVENTS, SHARE, START_RECORDING, SignalSocket, join
from tests.conftest import SECRET, people_at
from tests.gql_helpers import register
from tests.personas import People, Persona, make_room
from tests.processes import Cluster, running_cluster
from tests.wsclient import connect

GRACE_S = 0.5
STALE_S = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Heartbeats every second: a crashed instance's holds lapse after 2.5 s, swept each 1 s.
    env = {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET, "LOG_LEVEL": "INFO",
           "CALL_GRACE_SECONDS": str(GRACE_S), "CALL_STALE_SECONDS": str(STALE_S),
           "WS_HEARTBEAT_INTERVAL": "1", "ENABLE_VIDEO_RECORDING": "true"}
    tmp = tmp_path_factory.mktemp("calls-multi")
    env["RECORDING_DIR"] = str(tmp / "recordings")
    with running_cluster(tmp, names=("a", "b", "c"), env=env) as running:
        yield running


@pytest.fixture
async def people(cluster: Cluster, tmp_path: Path) -> AsyncIterator[People]:
    async with people_at(cluster.services["a"].url, tmp_path) as crowd:
        yield crowd


async def pair(people: People) -> tuple[Persona, Persona, str]:
    host, guest = people.make_user("doctor"), people.make_user("doctor")
    await register(host, guest)
    room = await make_room(host, invite=[guest])
    return host, guest, room["id"]


async def test_signals_cross_instances_in_order(cluster: Cluster, people: People) -> None:
    host, guest, room_id = await pair(people)
    a, b = cluster.services["a"], cluster.services["b"]
    sender = await SignalSocket.open(a.ws_url, host, room_id)
    receiver = await SignalSocket.open(b.ws_url, people.at(guest, b.url), room_id)
    try:
        await asyncio.sleep(0.3)
        sender.session_id = (await join(host, room_id))["sessionId"]
        receiver.session_id = (await join(people.at(guest, b.url), room_id))["sessionId"]
        candidates = [{"candidate": f"candidate:{i} 1 udp 1 127.0.0.1 {5000 + i} typ host",
                       "sdpMid": "0", "sdpMLineIndex": 0} for i in range(10)]
        for candidate in candidates:
            body = await sender.send(guest.id, "ICE_CANDIDATE", candidate=candidate)
            assert body["data"]["sendWebrtcSignal"] is True, body
        got = [await receiver.receive() for _ in candidates]
        assert [s["candidate"] for s in got] == candidates
        assert {s["from"]["id"] for s in got} == {host.id}
    finally:
        await sender.close()
        await receiver.close()


async def test_one_presenter_whichever_instances_race(cluster: Cluster,
                                                      people: People) -> None:
    host, guest, room_id = await pair(people)
    on_b = people.at(guest, cluster.services["b"].url)
    await join(host, room_id)
    await join(on_b, room_id)
    for _ in range(5):
        bodies = await asyncio.gather(host.post(SHARE, {"room": room_id}),
                                      on_b.post(SHARE, {"room": room_id}))
        codes = sorted(str(b["errors"][0]["extensions"]["code"]) if b.get("errors") else "ok"
                       for b in bodies)
        assert codes == ["PRESENTER_BUSY", "ok"], bodies
        winner = host if not bodies[0].get("errors") else on_b
        await winner.gql("mutation($r: ID!) { stopScreenShare(roomId: $r) { active } }",
                         r=room_id)


async def test_a_socket_on_one_instance_keeps_the_call_another_serves(
        cluster: Cluster, people: People) -> None:
    host, guest, room_id = await pair(people)
    b = cluster.services["b"]
    watcher = await connect(cluster.services["a"].ws_url, host.token)
    await watcher.subscribe("ev", CALL_EVENTS, {"room": room_id})
    socket = await SignalSocket.open(b.ws_url, people.at(guest, b.url), room_id)
    await asyncio.sleep(0.3)
    await join(guest, room_id)  # joined through instance a; the socket is on b
    await asyncio.sleep(GRACE_S * 4)
    call = (await host.gql(CALL, room=room_id))["room"]["call"]
    assert [p["user"]["id"] for p in call["participants"]] == [guest.id]
    await socket.close()
    left = await watcher.until("ev", lambda e: e["__typename"] == "CallParticipantLeft",
                               timeout=GRACE_S * 10)
    assert left[-1]["reason"] == "disconnected"
    await watcher.close()


async def test_a_crashed_instances_participants_and_recorder_go_stale(
        cluster: Cluster, people: People) -> None:
    host, guest, room_id = await pair(people)
    a, c = cluster.services["a"], cluster.services["c"]
    watcher = await connect(a.ws_url, host.token)
    await watcher.subscribe("ev", CALL_EVENTS, {"room": room_id})
    kept = await SignalSocket.open(a.ws_url, host, room_id)
    socket = await SignalSocket.open(c.ws_url, people.at(guest, c.url), room_id)
    await asyncio.sleep(0.3)
    await join(host, room_id)
    await join(people.at(guest, c.url), room_id)
    await people.at(host, c.url).gql(START_RECORDING, room=room_id)  # its peer runs on c
    await asyncio.sleep(STALE_S + 1)  # held by c's heartbeats past the stale time
    call = (await host.gql(CALL, room=room_id))["room"]["call"]
    assert len(call["participants"]) == 3 and call["recording"]["state"] == "RECORDING"
    assert c.proc is not None
    c.proc.kill()  # no goodbye: its holds lapse, another instance's sweep removes the guest
    left = await watcher.until("ev", lambda e: e["__typename"] == "CallParticipantLeft",
                               timeout=STALE_S + 10)
    assert left[-1] == {"__typename": "CallParticipantLeft", "reason": "disconnected",
                        "user": {"id": guest.id}}
    ended = await watcher.until("ev", lambda e: e["__typename"] == "RecordingStateChanged"
                                and e["recording"]["state"] == "OFF")
    assert ended[-1]["recording"]["consents"] == []
    call = (await host.gql(CALL, room=room_id))["room"]["call"]
    assert [p["user"]["id"] for p in call["participants"]] == [host.id]
    assert call["recording"]["state"] == "OFF"
    await watcher.close()
    await kept.close()
    await socket.ws.close()

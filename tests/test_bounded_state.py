"""Nothing the service keeps per room or per user grows without bound: 10,000 rooms are
streamed in turn (subscribe, type in some, unsubscribe) over real sockets, and afterwards every
per-room and per-user map is back to its size before (bounded caches stay within their
bounds)."""

from __future__ import annotations

import asyncio
import time
import uuid

from graph_db.models import now_ms
from realtime.hub import HINTS_KEPT
from resolvers.context import Services
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People
from tests.wsclient import WSClient, connect

ROOMS = 10_000
SOCKETS = 8
TYPE_EVERY = 10  # typing in every tenth room (each is a mutation of its own)
EVENTS = """subscription($room: ID!) {
  roomEvents(roomId: $room) { __typename ... on PresenceChanged { online user { id } } }
}"""
TYPING = "mutation($room: ID!) { setTyping(roomId: $room, typing: true) }"

# The same nodes and edges createRoom writes (graph_db/rooms.py), in one statement.
BULK_ROOMS = """
MATCH (host:User {id: $hostId})
UNWIND $ids AS id
CREATE (r:Room {id: id, name: 'bulk ' + id, description: null, type: 'CASE_DISCUSSION',
                visibility: 'PRIVATE', maxParticipants: 20, hostId: $hostId, createdAt: $now,
                updatedAt: $now, lockVersion: 0})
CREATE (host)-[:MEMBER_OF {role: 'HOST', joinedAt: $now}]->(r)
"""


def sizes(live: LiveServer) -> dict[str, int]:
    async def read() -> dict[str, int]:
        services: Services = live.services
        return {**services.hub.sizes(), "typing.throttle": services.typing.size(),
                "db.key_locks": len(services.db._key_locks)}

    return live.call(read())


async def stream_rooms(client: WSClient, user_id: str, room_ids: list[str]) -> None:
    """Each room in turn: subscribe, wait until attached (our own presence arrives), maybe
    type, unsubscribe."""
    tag = uuid.uuid4().hex[:6]  # operation ids never reused across calls
    for n, room_id in enumerate(room_ids):
        await client.subscribe(f"r{tag}{n}", EVENTS, {"room": room_id})
        while True:
            event = await client.event(f"r{tag}{n}", timeout=10)
            if event.get("user", {}).get("id") == user_id and event.get("online"):
                break
        if n % TYPE_EVERY == 0:
            await client.subscribe(f"t{tag}{n}", TYPING, {"room": room_id})
            reply = await client.next_message(10, id=f"t{tag}{n}")
            assert reply["payload"] == {"data": {"setTyping": True}}, reply
        await client.complete(f"r{tag}{n}")
        client.log.clear()  # the reader positions restart: keep the log small
        client._pos.clear()


async def test_ten_thousand_rooms_in_turn_leave_nothing_behind(fresh: LiveServer,
                                                                people: People) -> None:
    doctor = people.make_user("doctor", "Dr Many Rooms")
    await register(doctor)
    ids = [str(uuid.uuid4()) for _ in range(ROOMS)]
    for start in range(0, ROOMS, 2_000):
        fresh.call(fresh.services.db.write_rows(BULK_ROOMS, hostId=doctor.id,
                                                ids=ids[start:start + 2_000], now=now_ms()))
    clients = [await connect(fresh.ws_url, doctor.token) for _ in range(SOCKETS)]
    await stream_rooms(clients[0], doctor.id, ids[:1])  # warm: first-use caches filled
    await settle(fresh)
    before = sizes(fresh)

    started = time.monotonic()
    shares = [ids[1 + k::SOCKETS] for k in range(SOCKETS)]
    await asyncio.gather(*(stream_rooms(c, doctor.id, s)
                           for c, s in zip(clients, shares, strict=True)))
    elapsed = time.monotonic() - started
    during = sizes(fresh)
    for client in clients:
        await client.close()
    await settle(fresh)
    after = sizes(fresh)

    print(f"\n{ROOMS} rooms streamed in {elapsed:.1f} s; sizes before {before}, "
          f"right after {during}, settled {after}")
    assert during["hub.streams"] <= SOCKETS  # each socket follows one room at a time
    assert after["hub.hints"] <= HINTS_KEPT
    bounded = {"hub.hints"}
    assert {k: v for k, v in after.items() if k not in bounded} == {
        k: v for k, v in before.items() if k not in bounded}


async def settle(live: LiveServer) -> None:
    """Past the presence grace period and the typing throttle's second."""
    await asyncio.sleep(live.settings.presence_grace_seconds + 1.2)

"""An event is rendered once per group of identical subscriptions, not once per subscriber:
the Cypher queries its rendering costs are the same for 1 subscriber as for 40."""

from __future__ import annotations

import asyncio

from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.rt_helpers import attached, send
from tests.wsclient import WSClient, connect

EVENTS = """
subscription($room: ID!) {
  roomEvents(roomId: $room) {
    __typename cursor
    ... on MessagePosted { message { id content seq author { displayName } } }
  }
}"""

OTHER_SELECTION = """
subscription($room: ID!) {
  roomEvents(roomId: $room) { __typename ... on MessagePosted { message { id createdAt } } }
}"""


async def _subscribers(live: LiveServer, people: People, room_id: str, host: Persona,
                       count: int, query: str = EVENTS) -> list[WSClient]:
    members = [people.make_user("student") for _ in range(count - 1)]
    await asyncio.gather(*(m.gql("{ me { id } }") for m in members))  # known to the service
    if members:
        await host.gql("mutation($r: ID!, $u: [ID!]!) { inviteToRoom(roomId: $r, userIds: $u) "
                       "{ id } }", r=room_id, u=[m.id for m in members])
    clients = []
    for who in [host, *members]:
        client = await connect(live.ws_url, who.token)
        await client.subscribe("s", query, {"room": room_id})
        clients.append(client)
    await attached(live, room_id, count)
    return clients


async def _render_cost(live: LiveServer, sender: Persona, room_id: str,
                       clients: list[WSClient]) -> int:
    """Cypher queries of one sendMessage and of rendering its event for every subscriber
    (the send's own share is the same whatever the number of subscribers)."""
    await asyncio.sleep(0.3)  # presence announcements of the new sockets settle first
    for client in clients:
        client.log.clear()
        client._pos.clear()
    before = live.query_count()
    await send(sender, room_id, "hello")
    for client in clients:
        event = await client.event("s")
        assert event["__typename"] == "MessagePosted"
    await asyncio.sleep(0.2)
    return live.query_count() - before


async def test_rendering_cost_does_not_grow_with_subscribers(fresh: LiveServer,
                                                             people: People) -> None:
    host = people.make_user("teacher")
    room = await make_room(host, type="TEACHING", maxParticipants=20)
    one = await _subscribers(fresh, people, room["id"], host, 1)
    cost_one = await _render_cost(fresh, host, room["id"], one)
    for client in one:
        await client.close()

    room = await make_room(host, type="TEACHING", name="Big", maxParticipants=20)
    many = await _subscribers(fresh, people, room["id"], host, 20)
    cost_many = await _render_cost(fresh, host, room["id"], many)
    for client in many:
        await client.close()
    assert cost_one > 0
    assert cost_many == cost_one


async def test_two_selections_render_twice_and_each_gets_its_own_shape(
        fresh: LiveServer, people: People) -> None:
    host = people.make_user("teacher")
    room = await make_room(host, type="TEACHING")
    full = await _subscribers(fresh, people, room["id"], host, 1)
    other = await connect(fresh.ws_url, host.token)
    await other.subscribe("s", OTHER_SELECTION, {"room": room["id"]})
    await attached(fresh, room["id"], 2)
    await send(host, room["id"], "shapes")
    posted = lambda e: e["__typename"] == "MessagePosted"  # noqa: E731
    first = (await full[0].until("s", posted))[-1]
    second = (await other.until("s", posted))[-1]
    assert set(first["message"]) == {"id", "content", "seq", "author"}
    assert set(second["message"]) == {"id", "createdAt"}
    assert first["message"]["id"] == second["message"]["id"]
    await full[0].close()
    await other.close()

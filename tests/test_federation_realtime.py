"""roomEvents through Hive Gateway: the gateway's client speaks graphql-transport-ws to Hive, Hive
speaks it to the service with the caller's token in connection_init (tests/clients/federation/
hive.config.mjs). Events arrive in order with the main app's fields; refusals keep their codes;
a token expiring upstream reaches the client as UNAUTHENTICATED at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from graph_db import events as event_log
from realtime import cursor as event_cursor
from tests.gateways import Gateway
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.rt_helpers import REMOVE, attached, send
from tests.wsclient import connect, seq_of

EVENTS = """
subscription($room: ID!, $after: String) {
  roomEvents(roomId: $room, after: $after) {
    __typename cursor
    ... on MessagePosted { message { content seq author { displayName department } } }
  }
}"""
SEND = """
mutation($room: ID!, $content: String!) {
  sendMessage(roomId: $room, input: {content: $content}) { seq author { department } }
}"""
ASSIGN = "mutation($u: ID!, $d: String!) { assignDepartment(userId: $u, department: $d) { id } }"


async def room_with_member(people: People, hive: Gateway
                           ) -> tuple[Persona, Persona, str]:
    host, member = people.make_user("doctor"), people.make_user("student")
    await register(member)
    room = await make_room(host, visibility="PUBLIC", invite=[member])
    await hive.data(ASSIGN, host.token, u=host.id, d="Neurology")
    return host, member, room["id"]


async def test_room_events_in_order_through_hive(hive: Gateway, fresh: LiveServer,
                                                 people: People) -> None:
    host, member, rid = await room_with_member(people, hive)
    async with await connect(hive.ws_url, member.token) as client:
        await client.subscribe("s", EVENTS, {"room": rid})
        await attached(fresh, rid, 1)  # Hive subscribed upstream, as the member
        sent = [(await hive.data(SEND, host.token, room=rid, content=f"m{n}"))["sendMessage"]
                for n in range(3)]
        burst = await asyncio.gather(*(hive.data(SEND, host.token, room=rid, content=f"b{n}")
                                       for n in range(20)))
        sent += [b["sendMessage"] for b in burst]
        events = await client.durable("s", len(sent), timeout=30)
    seqs = [e["message"]["seq"] for e in events]
    assert seqs == sorted(s["seq"] for s in sent)  # every one, in order, once
    assert [seq_of(e["cursor"]) for e in events] == seqs
    assert [e["message"]["content"] for e in events[:3]] == ["m0", "m1", "m2"]
    # Each event got the main app's field for its author, through the gateway.
    assert {e["message"]["author"]["department"] for e in events} == {"Neurology"}
    await attached(fresh, rid, 0)


async def test_refused_subscriptions_keep_their_codes_through_hive(
        hive: Gateway, fresh: LiveServer, people: People) -> None:
    host, member, rid = await room_with_member(people, hive)
    outsider = people.make_user("teacher")
    await register(outsider)
    sent = [await send(host, rid, f"m{n}") for n in range(4)]
    fresh.call(event_log.prune_events(fresh.services.db, rid, sent[2]["seq"]))
    pruned = event_cursor.encode(rid, sent[0]["seq"])
    async with await connect(hive.ws_url, outsider.token) as stranger, \
            await connect(hive.ws_url, member.token) as client:
        # The outsider's token went upstream, not anyone else's: FORBIDDEN for them alone.
        await stranger.subscribe("x", EVENTS, {"room": rid})
        refused = await stranger.next_message(id="x")
        assert refused["type"] == "next" and refused["payload"]["data"] is None
        (error,) = refused["payload"]["errors"]
        assert error["extensions"] == {"code": "FORBIDDEN", "serviceName": "collaboration"}
        assert error["message"] == "only participants follow a room's events"
        assert (await stranger.next_message(id="x"))["type"] == "complete"
        await client.subscribe("bad", EVENTS, {"room": rid, "after": "not a cursor"})
        assert await client.error("bad") == ["BAD_USER_INPUT"]
        await client.subscribe("old", EVENTS, {"room": rid, "after": pruned})
        assert await client.error("old") == ["RESYNC_REQUIRED"]
        # Removed while following: FORBIDDEN ends the stream (the service's _end path).
        await client.subscribe("live", EVENTS, {"room": rid})
        await attached(fresh, rid, 1)
        await host.gql(REMOVE, room=rid, user=member.id)
        assert await client.error("live", timeout=10) == ["FORBIDDEN"]
        assert client.close_code is None and stranger.close_code is None


async def test_token_expiring_upstream_reaches_the_client(hive: Gateway, fresh: LiveServer,
                                                          people: People) -> None:
    """Hive checks no token itself: the service ends each operation with UNAUTHENTICATED before
    closing its upstream socket with 4403, and Hive passes that on at once (a bare 4403 would be
    retried silently by its graphql-ws client for about a minute)."""
    host, member, rid = await room_with_member(people, hive)
    # exp is in whole seconds: this one ends 2 to 3 s from now.
    token = people.token_for(member.id, member.name, member.role, ttl=timedelta(seconds=3))
    async with await connect(hive.ws_url, token) as client:
        await client.subscribe("s", EVENTS, {"room": rid})
        await attached(fresh, rid, 1)
        await send(host, rid, "before expiry")
        (event,) = await client.durable("s", 1)
        assert event["message"]["content"] == "before expiry"
        # Within seconds of the expiry, not after the minute of silent retries.
        assert await client.error("s", timeout=8) == ["UNAUTHENTICATED"]
        await attached(fresh, rid, 0)
        assert client.close_code is None  # the gateway's own socket stays usable

"""In-app notifications over the real API: who gets what (join requests, decisions,
invitations, mentions, replies, room updates), never the actor, exactly once per cause even
when it is processed twice, live on the `notifications` subscription, paged, marked read."""

from __future__ import annotations

import asyncio
from typing import Any

from graph_db.events import EventRecord, EventType
from graph_db.messages import messages_by_ids
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.test_membership import DECIDE, INVITE, JOIN, moderated_room
from tests.wsclient import connect

NOTIFICATIONS = """
query($unread: Boolean, $first: Int, $after: String) {
  notifications(unreadOnly: $unread, first: $first, after: $after) {
    unreadCount
    edges { cursor node { id kind title body readAt refId room { id } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
MARK = "mutation($ids: [ID!]) { markNotificationsRead(ids: $ids) }"
LIVE = "subscription { notifications { id kind refId room { id } } }"
SEND = ("mutation($room: ID!, $input: SendMessageInput!) "
        "{ sendMessage(roomId: $room, input: $input) { id seq } }")
UPDATE = "mutation($id: ID!, $name: String) { updateRoom(id: $id, input: {name: $name}) { id } }"


async def settled(live: LiveServer) -> None:
    """The background work of the writes so far is done."""
    await asyncio.to_thread(live.call, live.services.inbox.drain())


async def inbox(who: Persona, **variables: Any) -> dict[str, Any]:
    found: dict[str, Any] = (await who.gql(NOTIFICATIONS, **variables))["notifications"]
    return found


def kinds(page: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e["node"]["kind"], e["node"]["refId"]) for e in page["edges"]]


async def post(who: Persona, room_id: str, content: str, **extra: Any) -> dict[str, Any]:
    sent: dict[str, Any] = (await who.gql(SEND, room=room_id,
                                          input={"content": content, **extra}))["sendMessage"]
    return sent


async def test_mentions_and_replies(people: People, fresh: LiveServer) -> None:
    host, a, b, c = (people.make_user("doctor") for _ in range(4))
    await register(host, a, b, c)
    room_id = (await make_room(host, invite=[a, b, c]))["id"]
    await settled(fresh)
    await host.gql(MARK, ids=None)  # nothing for the host; the invitees' invitations:
    for who in (a, b, c):
        assert kinds(await inbox(who)) == [("INVITATION", None)]
        assert await who.gql(MARK, ids=None) == {"markNotificationsRead": 1}
    root = await post(a, room_id, f"question for <@{b.id}>")
    reply = await post(b, room_id, "answer", parentId=root["id"])
    again = await post(c, room_id, f"me too <@{b.id}>", parentId=reply["id"])
    await settled(fresh)
    assert kinds(await inbox(b, unread=True)) == [("MENTION", again["id"]),
                                                  ("MENTION", root["id"])]
    # a wrote the root: replies reach them; c's reply also reaches b (mentioned: MENTION).
    assert kinds(await inbox(a, unread=True)) == [("REPLY", again["id"]),
                                                  ("REPLY", reply["id"])]
    assert kinds(await inbox(c, unread=True)) == []  # their own reply: never the actor
    assert kinds(await inbox(host)) == []  # not in the thread, not mentioned


async def test_join_requests_decisions_and_invitations(people: People,
                                                       fresh: LiveServer) -> None:
    host, mod, room = await moderated_room(people)
    doc, guest = people.make_user("doctor"), people.make_user("doctor")
    await register(doc, guest)
    await settled(fresh)
    await host.gql(MARK, ids=None)
    await mod.gql(MARK, ids=None)
    request = (await doc.gql(JOIN, id=room["id"]))["joinRoom"]["request"]
    await doc.gql(JOIN, id=room["id"])  # still pending: no second request, no second note
    await settled(fresh)
    for manager in (host, mod):
        page = await inbox(manager, unread=True)
        assert kinds(page) == [("JOIN_REQUEST", request["id"])]
        assert page["edges"][0]["node"]["room"] == {"id": room["id"]}
    await mod.gql(DECIDE, id=request["id"], approve=True)
    await host.gql(INVITE, room=room["id"], users=[guest.id])
    await settled(fresh)
    decision = (await inbox(doc))["edges"][0]["node"]
    assert (decision["kind"], decision["body"]) == ("JOIN_DECISION", "approved")
    assert [k for k, _ in kinds(await inbox(doc))] == ["JOIN_DECISION"]  # no INVITATION
    assert kinds(await inbox(guest)) == [("INVITATION", None)]
    assert kinds(await inbox(mod, unread=True)) == [("JOIN_REQUEST", request["id"])]


async def test_room_updates_reach_participants_but_not_the_actor(
        people: People, fresh: LiveServer) -> None:
    host, member = people.make_user("doctor"), people.make_user("doctor")
    await register(host, member)
    room_id = (await make_room(host, invite=[member]))["id"]
    await host.gql(UPDATE, id=room_id, name="Renamed")
    await settled(fresh)
    assert [k for k, _ in kinds(await inbox(member))] == ["ROOM_UPDATED", "INVITATION"]
    assert kinds(await inbox(host)) == []


async def test_live_paged_and_marked_read(people: People, fresh: LiveServer) -> None:
    host, member = people.make_user("doctor"), people.make_user("doctor")
    await register(host, member)
    room_id = (await make_room(host, invite=[member]))["id"]
    await settled(fresh)  # the invitation: before the subscription
    ws = await connect(fresh.ws_url, member.token)
    await ws.subscribe("n", LIVE)
    await asyncio.sleep(0.3)
    sent = [await post(host, room_id, f"<@{member.id}> {i}") for i in range(5)]
    live = [await ws.next_message(5, id="n") for _ in sent]
    assert [m["payload"]["data"]["notifications"]["refId"] for m in live] == [
        s["id"] for s in sent]
    await ws.close()
    await settled(fresh)
    first = await inbox(member, first=2)
    assert first["unreadCount"] == 6 and first["pageInfo"]["hasNextPage"]
    rest = await inbox(member, first=10, after=first["pageInfo"]["endCursor"])
    ids = [e["node"]["id"] for e in first["edges"] + rest["edges"]]
    assert len(ids) == 6 == len(set(ids))
    assert (await member.gql(MARK, ids=ids[:2]))["markNotificationsRead"] == 2
    assert (await member.gql(MARK, ids=ids[:2]))["markNotificationsRead"] == 0
    unread = await inbox(member, unread=True)
    assert unread["unreadCount"] == 4 and len(unread["edges"]) == 4
    assert await host.gql(MARK, ids=ids) == {"markNotificationsRead": 0}  # not theirs
    assert (await member.gql(MARK, ids=None))["markNotificationsRead"] == 4
    assert (await inbox(member))["unreadCount"] == 0


async def test_a_cause_processed_twice_notifies_once(people: People, fresh: LiveServer) -> None:
    host, member = people.make_user("doctor"), people.make_user("doctor")
    await register(host, member)
    room_id = (await make_room(host, invite=[member]))["id"]
    sent = await post(host, room_id, f"<@{member.id}> once")
    await settled(fresh)

    async def again() -> None:  # as a retry or a second instance would
        (message,) = await messages_by_ids(fresh.services.db, [sent["id"]])
        assert message is not None
        event = EventRecord(room_id, sent["seq"], EventType.MESSAGE_POSTED, 0,
                            message_id=sent["id"])
        for _ in range(3):
            fresh.services.inbox.message_posted(message, event)
        await fresh.services.inbox.drain()

    await asyncio.to_thread(fresh.call, again())
    mentions = [k for k in kinds(await inbox(member)) if k[0] == "MENTION"]
    assert mentions == [("MENTION", sent["id"])]


async def test_the_room_disappears_once_it_cannot_be_seen(people: People,
                                                          fresh: LiveServer) -> None:
    host, member = people.make_user("doctor"), people.make_user("patient")
    await register(host, member)
    room_id = (await make_room(host, invite=[member], type="CONSULTATION"))["id"]
    await settled(fresh)
    assert (await inbox(member))["edges"][0]["node"]["room"] == {"id": room_id}
    await host.gql("mutation($id: ID!) { deleteRoom(id: $id) }", id=room_id)
    assert (await inbox(member))["edges"][0]["node"]["room"] is None

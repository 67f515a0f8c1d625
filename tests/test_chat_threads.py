"""Chat threads, paging a room's history, unread counts with read marks, and the N+1 guard
on a room's message list."""

from __future__ import annotations

from typing import Any

from tests.gql_helpers import bad_input
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.test_chat import DELETE, MESSAGE, PAGE, REACT, chat_room, send

REPLIES = """
query($id: ID!, $first: Int, $after: String) {
  message(id: $id) {
    replyCount
    replies(first: $first, after: $after) {
      edges { cursor node { id content parent { id } } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}"""
MARK = ("mutation($room: ID!, $seq: Int!) "
        "{ markRoomRead(roomId: $room, upToSeq: $seq) { id unreadCount } }")
UNREAD = "query($room: ID!) { room(id: $room) { unreadCount } }"


async def page_of(who: Persona, room_id: str, **variables: Any) -> dict[str, Any]:
    data = await who.gql(PAGE, room=room_id, **variables)
    page: dict[str, Any] = data["room"]["messages"]
    return page


def contents(page: dict[str, Any]) -> list[str]:
    return [e["node"]["content"] for e in page["edges"]]


async def unread(who: Persona, room_id: str) -> int:
    count: int = (await who.gql(UNREAD, room=room_id))["room"]["unreadCount"]
    return count


# --- threads --------------------------------------------------------------------------------


async def test_threads(people: People, fresh: LiveServer) -> None:
    host, member, room = await chat_room(people)
    root = await send(host, room["id"], "root")
    first = await send(member, room["id"], "first reply", parentId=root["id"])
    nested = await send(host, room["id"], "reply to a reply", parentId=first["id"])
    assert first["parent"] == {"id": root["id"]}
    assert nested["parent"] == {"id": first["id"]}  # quotes what it answers ...
    node = fresh.call(fresh.services.db.read_rows(
        "MATCH (m:Message {id: $id})-[:REPLY_TO]->(r:Message) RETURN m.rootId AS root, "
        "m.parentId AS parent, r.id AS linked", id=nested["id"]))
    # ... and joins the root's thread.
    assert node == [{"root": root["id"], "parent": first["id"], "linked": root["id"]}]
    thread = (await member.gql(REPLIES, id=root["id"]))["message"]
    assert thread["replyCount"] == 2
    assert [e["node"]["content"] for e in thread["replies"]["edges"]] == [
        "first reply", "reply to a reply"]
    assert (await member.gql(REPLIES, id=first["id"]))["message"]["replyCount"] == 0
    # Replies live in their thread, not in the room's top-level list.
    page = await page_of(host, room["id"])
    assert contents(page) == ["root"] and page["edges"][0]["node"]["replyCount"] == 2

    await host.gql(DELETE, id=first["id"])
    thread = (await member.gql(REPLIES, id=root["id"]))["message"]
    assert thread["replyCount"] == 2 and [e["node"]["content"] for e in thread["replies"][
        "edges"]] == ["", "reply to a reply"]


async def test_reply_rules(people: People) -> None:
    host, _, room = await chat_room(people)
    other_room = await make_room(host, name="Elsewhere")
    foreign = await send(host, other_room["id"], "not here")
    for parent in (foreign["id"], "no-such-message", "x" * 300):
        await bad_input(host, "mutation($room: ID!, $input: SendMessageInput!) "
                        "{ sendMessage(roomId: $room, input: $input) { id } }",
                        "input.parentId", room=room["id"],
                        input={"content": "reply", "parentId": parent})


async def test_replies_pagination(people: People) -> None:
    host, member, room = await chat_room(people)
    root = await send(host, room["id"], "root")
    for i in range(5):
        await send(member if i % 2 else host, room["id"], f"r{i}", parentId=root["id"])
    first = (await host.gql(REPLIES, id=root["id"], first=2))["message"]["replies"]
    assert [e["node"]["content"] for e in first["edges"]] == ["r0", "r1"]
    assert first["pageInfo"]["hasNextPage"] and not first["pageInfo"]["hasPreviousPage"]
    rest = (await host.gql(REPLIES, id=root["id"], first=10,
                           after=first["pageInfo"]["endCursor"]))["message"]["replies"]
    assert [e["node"]["content"] for e in rest["edges"]] == ["r2", "r3", "r4"]
    assert not rest["pageInfo"]["hasNextPage"] and rest["pageInfo"]["hasPreviousPage"]
    for first_value in (0, 101):
        await bad_input(host, REPLIES, "first", id=root["id"], first=first_value)
    other = await send(host, room["id"], "another root")
    await bad_input(host, REPLIES, "after", id=other["id"],
                    after=first["pageInfo"]["endCursor"])


# --- history pages --------------------------------------------------------------------------


async def test_room_history_pages_backwards(people: People) -> None:
    host, member, room = await chat_room(people)
    for i in range(7):
        await send(host, room["id"], f"m{i}")
    latest = await page_of(member, room["id"], last=3)
    assert contents(latest) == ["m4", "m5", "m6"]  # newest last
    assert latest["pageInfo"]["hasPreviousPage"] and not latest["pageInfo"]["hasNextPage"]
    assert latest["pageInfo"]["startCursor"] == latest["edges"][0]["cursor"]
    older = await page_of(member, room["id"], last=3, before=latest["pageInfo"]["startCursor"])
    assert contents(older) == ["m1", "m2", "m3"]
    assert older["pageInfo"]["hasPreviousPage"] and older["pageInfo"]["hasNextPage"]
    oldest = await page_of(member, room["id"], last=3, before=older["pageInfo"]["startCursor"])
    assert contents(oldest) == ["m0"] and not oldest["pageInfo"]["hasPreviousPage"]
    assert contents(await page_of(member, room["id"])) == [f"m{i}" for i in range(7)]

    for last in (0, -1, 101):
        await bad_input(member, PAGE, "last", room=room["id"], last=last)
    await bad_input(member, PAGE, "before", room=room["id"], before="garbage!")
    other = await make_room(host, name="Other")
    await bad_input(host, PAGE, "before", room=other["id"],
                    before=latest["pageInfo"]["startCursor"])


# --- unread counts and read marks -----------------------------------------------------------


async def test_unread_count_and_mark_read(people: People) -> None:
    host, member, room = await chat_room(people)
    assert await unread(member, room["id"]) == 0
    sent = [await send(host, room["id"], f"m{i}") for i in range(3)]
    await send(member, room["id"], "my own message does not count")
    reply = await send(host, room["id"], "replies count too", parentId=sent[0]["id"])
    assert await unread(member, room["id"]) == 4
    assert await unread(host, room["id"]) == 1

    marked = (await member.gql(MARK, room=room["id"], seq=sent[1]["seq"]))["markRoomRead"]
    assert marked == {"id": room["id"], "unreadCount": 2}
    # Never backwards.
    back = (await member.gql(MARK, room=room["id"], seq=0))["markRoomRead"]
    assert back["unreadCount"] == 2
    await host.gql(DELETE, id=reply["id"])
    assert await unread(member, room["id"]) == 1  # deleted messages are not unread
    # Clamped to the room's current seq: later messages are still unread.
    ahead = (await member.gql(MARK, room=room["id"], seq=10_000))["markRoomRead"]
    assert ahead["unreadCount"] == 0
    await send(host, room["id"], "new")
    assert await unread(member, room["id"]) == 1

    await bad_input(member, MARK, "upToSeq", room=room["id"], seq=-1)
    outsider = people.make_user("doctor")
    assert await outsider.error(MARK, room=room["id"], seq=1) == "NOT_FOUND"
    public = await make_room(host, name="Public", visibility="PUBLIC")
    assert await outsider.error(MARK, room=public["id"], seq=1) == "FORBIDDEN"


# --- N+1 guard ------------------------------------------------------------------------------

LISTING = """
query($room: ID!) {
  room(id: $room) {
    messages(last: 50) {
      edges { node { author { displayName } reactions { emoji count users { id } }
                     replyCount mentions { id }
                     replies(first: 5) { edges { node { content author { id } } } } } }
    }
  }
}"""


async def _queries_for(live: LiveServer, people: People, n: int) -> int:
    host, member, room = await chat_room(people)
    for i in range(n):
        sent = await send(host, room["id"], f"<@{member.id}> note {i}")
        await member.gql(REACT, id=sent["id"], emoji="👍")
        await send(member, room["id"], "a reply", parentId=sent["id"])
    before = live.query_count()
    data = await host.gql(LISTING, room=room["id"])
    used = live.query_count() - before
    edges = data["room"]["messages"]["edges"]
    assert len(edges) == n
    assert all(e["node"]["replyCount"] == 1 and e["node"]["mentions"] == [{"id": member.id}]
               and e["node"]["reactions"][0]["users"] == [{"id": member.id}] for e in edges)
    assert all([r["node"] for r in e["node"]["replies"]["edges"]]
               == [{"content": "a reply", "author": {"id": member.id}}] for e in edges)
    return used


async def test_message_list_batches_its_queries(people: People, fresh: LiveServer) -> None:
    assert await _queries_for(fresh, people, 1) == await _queries_for(fresh, people, 50)


async def test_message_lookup_by_id(people: People) -> None:
    host, member, room = await chat_room(people)
    sent = await send(host, room["id"], "look me up")
    assert (await member.gql(MESSAGE, id=sent["id"]))["message"]["id"] == sent["id"]
    for bad in ("no-such-id", "", "x" * 500):
        assert (await member.gql(MESSAGE, id=bad))["message"] is None

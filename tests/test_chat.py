"""Chat over real HTTP: sending (idempotent, ordered), editing with history, soft deletion,
content rules, reactions, mentions and who may read or write a room's messages."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from graph_db import messages
from graph_db.driver import GraphDB
from graph_db.messages import NewMessage, Sent
from tests.gql_helpers import bad_input, register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room

MSG = """id content deleted seq createdAt editedAt author { id } parent { id } replyCount
edits { content editedAt } reactions { emoji count reactedByMe users { id } }
mentions { id displayName }"""
SEND = (f"mutation($room: ID!, $input: SendMessageInput!) "
        f"{{ sendMessage(roomId: $room, input: $input) {{ {MSG} }} }}")
EDIT = (f"mutation($id: ID!, $content: String!) "
        f"{{ editMessage(id: $id, content: $content) {{ {MSG} }} }}")
DELETE = f"mutation($id: ID!) {{ deleteMessage(id: $id) {{ {MSG} }} }}"
REACT = (f"mutation($id: ID!, $emoji: String!) "
         f"{{ addReaction(messageId: $id, emoji: $emoji) {{ {MSG} }} }}")
UNREACT = (f"mutation($id: ID!, $emoji: String!) "
           f"{{ removeReaction(messageId: $id, emoji: $emoji) {{ {MSG} }} }}")
MESSAGE = f"query($id: ID!) {{ message(id: $id) {{ {MSG} room {{ id }} }} }}"
PAGE = """
query($room: ID!, $last: Int, $before: String) {
  room(id: $room) {
    unreadCount
    messages(last: $last, before: $before) {
      edges { cursor node { id content seq replyCount } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}"""
SET_ROLE = ("mutation($room: ID!, $user: ID!, $role: ParticipantRole!) "
            "{ setParticipantRole(roomId: $room, userId: $user, role: $role) { role } }")
JOIN = "mutation($id: ID!) { joinRoom(id: $id) { status } }"


async def send(who: Persona, room_id: str, content: str, **input: Any) -> dict[str, Any]:
    data = await who.gql(SEND, room=room_id, input={"content": content, **input})
    message: dict[str, Any] = data["sendMessage"]
    return message


async def chat_room(people: People, **kw: Any) -> tuple[Persona, Persona, dict[str, Any]]:
    """A room with a host and one member."""
    host, member = people.make_user("doctor"), people.make_user("student")
    await register(member)
    room = await make_room(host, invite=[member], **kw)
    return host, member, room


def events(live: LiveServer, room_id: str, type: str) -> list[dict[str, Any]]:
    return live.call(live.services.db.read_rows(
        "MATCH (e:Event {roomId: $room}) WHERE e.type = $type "
        "RETURN e.seq AS seq, e.messageId AS messageId ORDER BY e.seq",
        room=room_id, type=type))


def stored(live: LiveServer, message_id: str) -> dict[str, Any]:
    rows = live.call(live.services.db.read_rows(
        "MATCH (m:Message {id: $id}) RETURN m {.*} AS m", id=message_id))
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]["m"]
    return row


# --- send, edit, delete ---------------------------------------------------------------------


async def test_send_and_read_back(people: People, fresh: LiveServer) -> None:
    host, member, room = await chat_room(people)
    sent = await send(host, room["id"], "  Hello team  ")
    assert sent["content"] == "Hello team"  # trimmed
    assert (sent["author"], sent["deleted"], sent["editedAt"], sent["edits"]) == (
        {"id": host.id}, False, None, [])
    assert (sent["parent"], sent["replyCount"], sent["reactions"], sent["mentions"]) == (
        None, 0, [], [])
    read = (await member.gql(MESSAGE, id=sent["id"]))["message"]
    assert read["room"] == {"id": room["id"]}
    assert {k: v for k, v in read.items() if k != "room"} == sent
    posted = events(fresh, room["id"], "MessagePosted")
    assert posted == [{"seq": sent["seq"], "messageId": sent["id"]}]
    node = stored(fresh, sent["id"])
    assert (node["roomId"], node["authorId"], node["clientKey"]) == (
        room["id"], host.id, f"id:{sent['id']}")
    edges = fresh.call(fresh.services.db.read_rows(
        "MATCH (u:User)-[:POSTED]->(m:Message {id: $id})-[:IN]->(r:Room) "
        "RETURN u.id AS user, r.id AS room", id=sent["id"]))
    assert edges == [{"user": host.id, "room": room["id"]}]


async def test_edit_keeps_history(people: People, fresh: LiveServer) -> None:
    host, member, room = await chat_room(people)
    sent = await send(host, room["id"], "first")
    one = (await host.gql(EDIT, id=sent["id"], content="second"))["editMessage"]
    two = (await host.gql(EDIT, id=sent["id"], content=" third "))["editMessage"]
    assert (one["content"], two["content"]) == ("second", "third")
    assert [e["content"] for e in two["edits"]] == ["first", "second"]
    # Each replaced version carries the time it was written.
    assert two["edits"][0]["editedAt"] == sent["createdAt"]
    assert two["edits"][1]["editedAt"] == one["editedAt"]
    assert two["editedAt"] >= one["editedAt"] >= sent["createdAt"]
    assert two["seq"] == sent["seq"]  # the message keeps its place
    same = (await host.gql(EDIT, id=sent["id"], content="third"))["editMessage"]
    assert same["edits"] == two["edits"] and same["editedAt"] == two["editedAt"]
    assert len(events(fresh, room["id"], "MessageEdited")) == 2
    assert await member.error(EDIT, id=sent["id"], content="hijack") == "FORBIDDEN"
    outsider = people.make_user("doctor")
    assert await outsider.error(EDIT, id=sent["id"], content="x") == "NOT_FOUND"
    assert await host.error(EDIT, id="no-such-message", content="x") == "NOT_FOUND"
    await bad_input(host, EDIT, "content", id=sent["id"], content="   ")


async def test_soft_delete(people: People, fresh: LiveServer) -> None:
    host, member, room = await chat_room(people)
    sent = await send(member, room["id"], f"secret diagnosis <@{host.id}>")
    await member.gql(EDIT, id=sent["id"], content=f"secret diagnosis, edited <@{host.id}>")
    await host.gql(REACT, id=sent["id"], emoji="👍")
    reply = await send(host, room["id"], "a reply", parentId=sent["id"])

    gone = (await member.gql(DELETE, id=sent["id"]))["deleteMessage"]
    assert (gone["deleted"], gone["content"], gone["edits"], gone["reactions"],
            gone["mentions"]) == (True, "", [], [], [])
    assert gone["seq"] == sent["seq"] and gone["replyCount"] == 1  # the thread stays
    read = (await host.gql(MESSAGE, id=sent["id"]))["message"]
    assert (read["deleted"], read["content"], read["edits"]) == (True, "", [])
    # Storage keeps the content (moderation, audit); it is never returned.
    node = stored(fresh, sent["id"])
    assert node["deleted"] is True and "secret diagnosis, edited" in node["content"]
    assert node["editContents"] == [f"secret diagnosis <@{host.id}>"]
    assert (await host.gql(MESSAGE, id=reply["id"]))["message"]["parent"] == {"id": sent["id"]}

    again = (await member.gql(DELETE, id=sent["id"]))["deleteMessage"]
    assert again["deleted"] is True
    assert len(events(fresh, room["id"], "MessageDeleted")) == 1
    assert await member.error(EDIT, id=sent["id"], content="back") == "CONFLICT"
    assert await host.error(REACT, id=sent["id"], emoji="👍") == "CONFLICT"
    assert await host.error(UNREACT, id=sent["id"], emoji="👍") == "CONFLICT"


async def test_who_may_delete(people: People) -> None:
    host, member, room = await chat_room(people)
    mod, other = people.make_user("doctor"), people.make_user("student")
    admin, outsider = people.make_user("admin"), people.make_user("doctor")
    await register(mod, other, admin)
    await host.gql("mutation($r: ID!, $u: [ID!]!) { inviteToRoom(roomId: $r, userIds: $u) "
                   "{ id } }", r=room["id"], u=[mod.id, other.id, admin.id])
    await host.gql(SET_ROLE, room=room["id"], user=mod.id, role="MODERATOR")
    ids = [(await send(member, room["id"], f"m{i}"))["id"] for i in range(4)]
    assert await other.error(DELETE, id=ids[0]) == "FORBIDDEN"
    assert await outsider.error(DELETE, id=ids[0]) == "NOT_FOUND"
    for who, message_id in ((member, ids[0]), (host, ids[1]), (mod, ids[2]), (admin, ids[3])):
        assert (await who.gql(DELETE, id=message_id))["deleteMessage"]["deleted"] is True
    # An admin who is not a participant does not reach the room's messages.
    lone_admin = people.make_user("admin")
    kept = await send(member, room["id"], "kept")
    assert await lone_admin.error(DELETE, id=kept["id"]) == "NOT_FOUND"


async def test_content_limits_and_plain_text(people: People) -> None:
    host, _, room = await chat_room(people)
    for content in ("", "   \n\t "):
        await bad_input(host, SEND, "input.content", room=room["id"],
                        input={"content": content})
    await bad_input(host, SEND, "input.content", room=room["id"],
                    input={"content": "x" * 10_001})
    assert len((await send(host, room["id"], "x" * 10_000))["content"]) == 10_000
    html = "<b>bold</b> & <script>alert('x')</script> &amp; <@nobody"
    assert (await send(host, room["id"], html))["content"] == html  # literal, not escaped
    await bad_input(host, SEND, "input.clientMessageId", room=room["id"],
                    input={"content": "x", "clientMessageId": ""})


# --- reactions ------------------------------------------------------------------------------


async def test_reactions_are_idempotent(people: People, fresh: LiveServer) -> None:
    host, member, room = await chat_room(people)
    sent = await send(host, room["id"], "react to me")
    await member.gql(REACT, id=sent["id"], emoji="👍")
    twice = (await member.gql(REACT, id=sent["id"], emoji="👍"))["addReaction"]
    assert twice["reactions"] == [{"emoji": "👍", "count": 1, "reactedByMe": True,
                                   "users": [{"id": member.id}]}]
    both = (await host.gql(REACT, id=sent["id"], emoji="👍"))["addReaction"]
    await host.gql(REACT, id=sent["id"], emoji="🎉")
    assert both["reactions"] == [{"emoji": "👍", "count": 2, "reactedByMe": True,
                                  "users": [{"id": member.id}, {"id": host.id}]}]
    seen = (await member.gql(MESSAGE, id=sent["id"]))["message"]["reactions"]
    assert [(g["emoji"], g["count"], g["reactedByMe"]) for g in seen] == [
        ("👍", 2, True), ("🎉", 1, False)]
    assert len(events(fresh, room["id"], "ReactionsChanged")) == 3

    missing = (await member.gql(UNREACT, id=sent["id"], emoji="🎉"))["removeReaction"]
    assert len(missing["reactions"]) == 2
    assert len(events(fresh, room["id"], "ReactionsChanged")) == 3  # nothing changed
    removed = (await member.gql(UNREACT, id=sent["id"], emoji="👍"))["removeReaction"]
    assert [(g["emoji"], g["count"], g["reactedByMe"]) for g in removed["reactions"]] == [
        ("👍", 1, False), ("🎉", 1, False)]
    assert len(events(fresh, room["id"], "ReactionsChanged")) == 4
    outsider = people.make_user("doctor")
    assert await outsider.error(REACT, id=sent["id"], emoji="👍") == "NOT_FOUND"


async def test_emoji_validation(people: People) -> None:
    host, _, room = await chat_room(people)
    sent = await send(host, room["id"], "emoji test")
    valid = ["👍", "👍🏽", "👨‍⚕️", "🇫🇷", "1️⃣", "#️⃣", "❤️", "🏳️‍🌈", "🧑🏽‍🤝‍🧑🏻",
             "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"]
    for emoji in valid:
        data = await host.gql(REACT, id=sent["id"], emoji=emoji)
        assert emoji in {g["emoji"] for g in data["addReaction"]["reactions"]}, emoji
    invalid = ["a", "👍👍", "", "<b>", " 👍", "👍 ", "1", "🇫", "🏽", "👍\u200d", "\u200d👍",
               "👨‍" * 16 + "👨", "e\u0301", "☺️x"]
    for emoji in invalid:
        await bad_input(host, REACT, "emoji", id=sent["id"], emoji=emoji)
        await bad_input(host, UNREACT, "emoji", id=sent["id"], emoji=emoji)


# --- mentions -------------------------------------------------------------------------------


async def test_mentions(people: People) -> None:
    host, member, room = await chat_room(people)
    stranger = people.make_user("doctor", "Stranger")
    await register(stranger)
    content = (f"<@{member.id}> please see, cc <@{stranger.id}> <@no-such-user> "
               f"<@{member.id}> and <@{host.id}>")
    sent = await send(host, room["id"], content)
    assert sent["content"] == content
    assert [m["id"] for m in sent["mentions"]] == [member.id, host.id]

    # The mention names the id: a new display name shows, the content is unchanged.
    renamed = Persona(member.id, "Dr Renamed", member.role,
                      people.token_for(member.id, "Dr Renamed", member.role), member.client)
    await renamed.gql("{ me { id } }")
    read = (await host.gql(MESSAGE, id=sent["id"]))["message"]
    assert read["content"] == content
    assert read["mentions"][0] == {"id": member.id, "displayName": "Dr Renamed"}

    edited = (await host.gql(EDIT, id=sent["id"], content=f"only <@{stranger.id}>"))
    assert edited["editMessage"]["mentions"] == []


# --- idempotent sends and ordering ----------------------------------------------------------


async def test_idempotent_send(people: People, fresh: LiveServer) -> None:
    host, member, room = await chat_room(people)
    first = await send(host, room["id"], "once", clientMessageId="c-1")
    again = await send(host, room["id"], "once (retried)", clientMessageId="c-1")
    assert again["id"] == first["id"] and again["content"] == "once"
    other_author = await send(member, room["id"], "mine", clientMessageId="c-1")
    assert other_author["id"] != first["id"]
    second_room = await make_room(host, name="Other")
    elsewhere = await send(host, second_room["id"], "there", clientMessageId="c-1")
    assert elsewhere["id"] != first["id"]
    assert len(events(fresh, room["id"], "MessagePosted")) == 2


async def test_concurrent_duplicate_sends(people: People, fresh: LiveServer) -> None:
    host, _, room = await chat_room(people)
    bodies = await asyncio.gather(*(
        host.post(SEND, {"room": room["id"], "input": {"content": f"try {i}",
                                                        "clientMessageId": "burst"}})
        for i in range(20)))
    assert all("errors" not in b for b in bodies), bodies
    assert len({b["data"]["sendMessage"]["id"] for b in bodies}) == 1
    assert len(events(fresh, room["id"], "MessagePosted")) == 1
    count = fresh.call(fresh.services.db.read_rows(
        "MATCH (m:Message {roomId: $room}) RETURN count(m) AS n", room=room["id"]))
    assert count == [{"n": 1}]


async def test_duplicate_sends_across_processes(people: People, fresh: LiveServer) -> None:
    """A second GraphDB has its own in-process locks, like another worker process: racing
    sends of one client key still make one message and one event."""
    host, _, room = await chat_room(people)
    db = fresh.services.db

    async def race() -> list[Sent]:
        other = GraphDB(db.driver, db.database)
        drafts = [NewMessage(id=str(uuid.uuid4()), room_id=room["id"], author_id=host.id,
                             content=f"race {i}", parent_id=None, root_id=None,
                             client_message_id="twin", mention_ids=[]) for i in range(6)]
        return await asyncio.gather(*(messages.send_message(db if i % 2 else other, d)
                                      for i, d in enumerate(drafts)))

    results = fresh.call(race(), timeout=120)
    assert len({r.message.id for r in results}) == 1
    assert sum(r.event is not None for r in results) == 1
    assert len(events(fresh, room["id"], "MessagePosted")) == 1


async def test_seq_is_strictly_increasing(people: People, fresh: LiveServer) -> None:
    host, member, room = await chat_room(people)
    bodies = await asyncio.gather(*(
        (host if i % 2 else member).post(SEND, {"room": room["id"], "input": {"content": f"{i}"}})
        for i in range(16)))
    sent = [b["data"]["sendMessage"] for b in bodies]
    seqs = sorted(m["seq"] for m in sent)
    assert len(set(seqs)) == 16 and seqs == list(range(seqs[0], seqs[0] + 16))
    posted = {e["messageId"]: e["seq"] for e in events(fresh, room["id"], "MessagePosted")}
    assert posted == {m["id"]: m["seq"] for m in sent}
    page = (await host.gql(PAGE, room=room["id"], last=20))["room"]["messages"]
    assert [e["node"]["seq"] for e in page["edges"]] == seqs


# --- access ---------------------------------------------------------------------------------


async def test_only_participants_read_and_write(people: People) -> None:
    host, _, room = await chat_room(people, visibility="PUBLIC")
    private = await make_room(host, name="Private")
    sent = await send(host, room["id"], "members only")
    hidden = await send(host, private["id"], "hidden")
    visitor, admin = people.make_user("doctor"), people.make_user("admin")
    for who in (visitor, admin):
        page = (await who.gql(PAGE, room=room["id"], last=10))["room"]
        assert page["messages"] == {"edges": [], "pageInfo": {
            "hasNextPage": False, "hasPreviousPage": False, "startCursor": None,
            "endCursor": None}}
        assert page["unreadCount"] == 0
        assert (await who.gql(MESSAGE, id=sent["id"]))["message"] is None
        assert await who.error(SEND, room=room["id"], input={"content": "hi"}) == "FORBIDDEN"
    assert (await visitor.gql(MESSAGE, id=hidden["id"]))["message"] is None
    assert await visitor.error(SEND, room=private["id"], input={"content": "hi"}) == "NOT_FOUND"
    assert await visitor.error(SEND, room="no-such-room", input={"content": "x"}) == "NOT_FOUND"
    # Joining opens the history.
    await visitor.gql(JOIN, id=room["id"])
    page = (await visitor.gql(PAGE, room=room["id"], last=10))["room"]
    assert [e["node"]["id"] for e in page["messages"]["edges"]] == [sent["id"]]
    assert page["unreadCount"] == 0  # history from before joining does not count as unread

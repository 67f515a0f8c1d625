"""Shared pieces of the real-time tests: subscription documents, mutations, and waiting for
a subscription to be attached to its room's stream."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.harness import LiveServer
from tests.personas import Persona

MESSAGE_FIELDS = "id content deleted seq editedAt author { id } reactions { emoji count }"
EVENTS = f"""
subscription($room: ID!, $after: String) {{
  roomEvents(roomId: $room, after: $after) {{
    __typename cursor roomId
    ... on MessagePosted {{ message {{ {MESSAGE_FIELDS} }} }}
    ... on MessageEdited {{ message {{ {MESSAGE_FIELDS} }} }}
    ... on MessageDeleted {{ message {{ {MESSAGE_FIELDS} }} }}
    ... on ReactionsChanged {{ message {{ {MESSAGE_FIELDS} }} }}
    ... on ParticipantJoined {{ participant {{ role user {{ id }} }} }}
    ... on ParticipantLeft {{ user {{ id }} }}
    ... on JoinRequested {{ request {{ id status user {{ id }} }} }}
    ... on TypingChanged {{ typing user {{ id }} }}
    ... on PresenceChanged {{ online user {{ id }} }}
  }}
}}"""
# A second selection set: subscribers using it form a group of their own.
EVENTS_SLIM = """
subscription($room: ID!, $after: String) {
  roomEvents(roomId: $room, after: $after) {
    __typename cursor
    ... on MessagePosted { message { id seq } }
    ... on PresenceChanged { online user { id } }
    ... on TypingChanged { typing user { id } }
  }
}"""

SEND = ("mutation($room: ID!, $content: String!) "
        "{ sendMessage(roomId: $room, input: {content: $content}) { id seq } }")
EDIT = "mutation($id: ID!, $content: String!) { editMessage(id: $id, content: $content) { id } }"
DELETE = "mutation($id: ID!) { deleteMessage(id: $id) { id } }"
REACT = "mutation($id: ID!, $emoji: String!) { addReaction(messageId: $id, emoji: $emoji) { id } }"
UNREACT = ("mutation($id: ID!, $emoji: String!) "
           "{ removeReaction(messageId: $id, emoji: $emoji) { id } }")
JOIN = "mutation($id: ID!) { joinRoom(id: $id) { status } }"
REMOVE = ("mutation($room: ID!, $user: ID!) "
          "{ removeParticipant(roomId: $room, userId: $user) { id } }")
DELETE_ROOM = "mutation($id: ID!) { deleteRoom(id: $id) }"
SET_ROLE = ("mutation($room: ID!, $user: ID!, $role: ParticipantRole!) "
            "{ setParticipantRole(roomId: $room, userId: $user, role: $role) { role } }")
TYPING = "mutation($room: ID!, $typing: Boolean!) { setTyping(roomId: $room, typing: $typing) }"
PAGE = """
query($room: ID!, $before: String) {
  room(id: $room) {
    messages(last: 100, before: $before) {
      edges { node { id seq author { id } } }
      pageInfo { hasPreviousPage startCursor }
    }
  }
}"""


async def send(who: Persona, room_id: str, content: str) -> dict[str, Any]:
    data = await who.gql(SEND, room=room_id, content=content)
    message: dict[str, Any] = data["sendMessage"]
    return message


async def all_messages(who: Persona, room_id: str) -> list[dict[str, Any]]:
    """Every top-level message of a room through Room.messages, oldest first."""
    found: list[dict[str, Any]] = []
    before = None
    while True:
        data = await who.gql(PAGE, room=room_id, before=before)
        page = data["room"]["messages"]
        found[:0] = [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasPreviousPage"]:
            return found
        before = page["pageInfo"]["startCursor"]


def subscriber_count(live: LiveServer, room_id: str) -> int:
    async def count() -> int:
        stream = live.services.hub.stream_of(room_id)
        return stream.subscriber_count if stream is not None else 0

    return live.call(count())


async def attached(live: LiveServer, room_id: str, count: int, timeout: float = 10.0) -> None:
    """Waits until `count` subscriptions follow the room (the server has no subscribe ack)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (n := await asyncio.to_thread(subscriber_count, live, room_id)) != count:
        assert loop.time() < deadline, f"{n} subscriptions attached, expected {count}"
        await asyncio.sleep(0.02)


def stored_events(live: LiveServer, room_id: str, after: int = 0) -> list[Any]:
    from graph_db import events as event_log

    return live.call(event_log.events_after(live.services.db, room_id, after, limit=100_000))


def head_seq(live: LiveServer, room_id: str) -> int:
    """The room's last event seq."""
    from graph_db import events as event_log

    head = live.call(event_log.stream_head(live.services.db, room_id))
    assert head is not None
    return head.seq

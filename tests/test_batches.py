"""Batched reads answer each key with its own row, never by position: keys are sent in an
order the database is free to change (reverse creation order, duplicates, missing ones in
between), against the real database and against one whose rows come back reversed (as a
planner may return them; Neo4j's hash joins do). One user's standing attributed to another
would be an authorization bug."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from graph_db import join_requests, messages, participants, rooms, users
from graph_db.driver import GraphDB
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.rt_helpers import send


class Reversing(GraphDB):
    """The real database, with every batch's rows handed back in reverse order."""

    async def read_rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return list(reversed(await super().read_rows(query, **params)))


def databases(live: LiveServer) -> dict[str, GraphDB]:
    real = live.services.db
    return {"real": real, "reversing": Reversing(real.driver, real.database)}


MISSING = "no-such-id"


def shuffled(keys: list[Any]) -> list[Any]:
    """Newest first, a missing key and duplicates in between."""
    reverse = list(reversed(keys))
    return [reverse[0], MISSING, *reverse, reverse[-1], reverse[0]]


class Ward:
    """Three rooms where one doctor stands differently: host, member, outsider with a pending
    request; messages with reactions and replies."""

    def __init__(self, people: People) -> None:
        self.doctor = people.make_user("doctor", "Dr Batch")
        self.hosts = [people.make_user("doctor", f"Host {n}") for n in range(3)]
        self.student = people.make_user("student", "Student Batch")
        self.rooms: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.request_id = ""

    async def build(self) -> None:
        await register(self.doctor, self.student, *self.hosts)
        own = await make_room(self.doctor, name="own", invite=[self.student])
        member = await make_room(self.hosts[0], name="member", invite=[self.doctor])
        await make_room(self.hosts[1], name="member too", invite=[self.doctor, self.student])
        closed = await make_room(self.hosts[2], name="asked")
        joined = await self.doctor.gql(
            "mutation($id: ID!) { joinRoom(id: $id) { request { id } } }", id=closed["id"])
        self.request_id = joined["joinRoom"]["request"]["id"]
        self.rooms = [own, member, closed]
        for n in range(3):
            self.messages.append(await send(self.doctor, own["id"], f"m{n}"))
        await self.student.gql(
            "mutation($id: ID!) { addReaction(messageId: $id, emoji: \"👍\") { id } }",
            id=self.messages[1]["id"])
        for n in range(2):
            await self.student.gql(
                "mutation($room: ID!, $parent: ID!, $c: String!) { sendMessage(roomId: $room,"
                " input: {content: $c, parentId: $parent}) { id } }",
                room=own["id"], parent=self.messages[2]["id"], c=f"reply {n}")


@pytest.fixture
async def ward(people: People) -> Ward:
    built = Ward(people)
    await built.build()
    return built


Check = Callable[[GraphDB, Ward], Awaitable[None]]


async def check_standings(db: GraphDB, w: Ward) -> None:
    keys = shuffled([(r["id"], w.doctor.id) for r in w.rooms])
    found = await rooms.standings(db, keys)
    by_room = {r["id"]: r["name"] for r in w.rooms}
    for key, standing in zip(keys, found, strict=True):
        if key == MISSING:
            assert standing is None
            continue
        assert standing is not None and standing.room.id == key[0]
        role = standing.member.role.value if standing.member else None
        assert (role, standing.pending) == {
            "own": ("HOST", False), "member": ("MEMBER", False),
            "asked": (None, True)}[by_room[key[0]]], key
        assert standing.member is None or standing.member.user_id == w.doctor.id


async def check_memberships(db: GraphDB, w: Ward) -> None:
    people = [w.doctor, w.student, *w.hosts]
    keys = shuffled([(w.rooms[0]["id"], p.id) for p in people])
    found = await participants.memberships(db, keys)
    expected = {w.doctor.id: "HOST", w.student.id: "MEMBER"}
    for key, member in zip(keys, found, strict=True):
        want = None if key == MISSING else expected.get(key[1])
        assert (member.role.value if member else None) == want, key
        assert member is None or (member.room_id, member.user_id) == key


async def check_rooms_and_counts(db: GraphDB, w: Ward) -> None:
    ids = shuffled([r["id"] for r in w.rooms])
    found = await rooms.rooms_by_ids(db, ids)
    assert [r.id if r else MISSING for r in found] == ids
    counts = await participants.counts_by_rooms(db, ids)
    sizes = {w.rooms[0]["id"]: 2, w.rooms[1]["id"]: 2, w.rooms[2]["id"]: 1, MISSING: 0}
    assert counts == [sizes[i] for i in ids]
    lists = await participants.participants_by_rooms(db, ids)
    assert all(p.room_id == i for i, ps in zip(ids, lists, strict=True) for p in ps)
    assert [len(ps) for ps in lists] == [sizes[i] for i in ids]


async def check_users(db: GraphDB, w: Ward) -> None:
    ids = shuffled([p.id for p in (w.doctor, w.student, *w.hosts)])
    found = await users.users_by_ids(db, ids)
    assert [u.id if u else MISSING for u in found] == ids
    shares = await users.shares_room_with(db, w.student.id, ids)
    sharing = {w.doctor.id, w.hosts[1].id}  # rooms in common with the student, now
    assert shares == [i in sharing for i in ids]


async def check_messages(db: GraphDB, w: Ward) -> None:
    ids = shuffled([m["id"] for m in w.messages])
    found = await messages.messages_by_ids(db, ids)
    assert [m.id if m else MISSING for m in found] == ids
    reactions = await messages.reactions_by_messages(db, ids)
    assert [[r.emoji for r in rs] for rs in reactions] == [
        ["👍"] if i == w.messages[1]["id"] else [] for i in ids]
    counts = await messages.reply_counts(db, ids)
    assert counts == [2 if i == w.messages[2]["id"] else 0 for i in ids]
    pages = await messages.replies_pages(db, [(i, None, 10) for i in ids])
    assert [len(p) for p in pages] == counts
    assert all(r.root_id == i for i, p in zip(ids, pages, strict=True) for r in p)


async def check_unread_and_requests(db: GraphDB, w: Ward) -> None:
    room = w.rooms[0]["id"]
    keys = shuffled([(room, w.student.id), (room, w.doctor.id), (w.rooms[1]["id"], w.doctor.id)])
    unread = await messages.unread_counts(db, keys)
    # The student has not read the doctor's 3 posts; the doctor's own posts never count,
    # and the student's 2 replies came after the doctor joined.
    want = {(room, w.student.id): 3, (room, w.doctor.id): 2}
    assert unread == [want.get(k, 0) for k in keys]
    ids = shuffled([w.request_id, str(uuid.uuid4())])
    requests = await join_requests.requests_by_ids(db, ids)
    assert [r.id if r else None for r in requests] == [
        i if i == w.request_id else None for i in ids]


CHECKS: dict[str, Check] = {
    "standings": check_standings, "memberships": check_memberships,
    "rooms": check_rooms_and_counts, "users": check_users, "messages": check_messages,
    "unread-and-requests": check_unread_and_requests,
}


@pytest.mark.parametrize("db_kind", ["real", "reversing"])
@pytest.mark.parametrize("check", list(CHECKS))
async def test_each_key_gets_its_own_row(fresh: LiveServer, ward: Ward, check: str,
                                         db_kind: str) -> None:
    db = databases(fresh)[db_kind]
    fresh.call(CHECKS[check](db, ward))


async def test_one_batch_of_access_checks_keeps_standings_apart(fresh: LiveServer,
                                                                ward: Ward) -> None:
    """Through the API: one operation, one standing batch, three different standings."""
    own, member, asked = (r["id"] for r in ward.rooms)
    query = """query($a: ID!, $b: ID!, $c: ID!) {
      c: room(id: $c) { name myMembership { role } }
      a: room(id: $a) { name myMembership { role } }
      b: room(id: $b) { name myMembership { role } participants { user { id } } }
    }"""
    data = await ward.doctor.gql(query, a=own, b=member, c=asked)
    assert data["a"] == {"name": "own", "myMembership": {"role": "HOST"}}
    assert data["b"]["myMembership"] == {"role": "MEMBER"}
    assert data["c"] == {"name": "asked", "myMembership": None}
    outsider: Persona = ward.student
    seen = await outsider.gql(query, a=own, b=member, c=asked)
    assert seen["a"]["myMembership"] == {"role": "MEMBER"}
    assert seen["b"] is None and seen["c"] is None

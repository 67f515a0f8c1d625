"""Rooms over real HTTP: create, update, soft-delete, filtered listing, Relay pagination and
input validation."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from tests.gql_helpers import bad_input, register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room

FIELDS = "id name description type visibility maxParticipants createdAt updatedAt"
CREATE = f"mutation($input: CreateRoomInput!) {{ createRoom(input: $input) {{ {FIELDS} }} }}"
UPDATE = (f"mutation($id: ID!, $input: UpdateRoomInput!) "
          f"{{ updateRoom(id: $id, input: $input) {{ {FIELDS} }} }}")
DELETE = "mutation($id: ID!) { deleteRoom(id: $id) }"
JOIN = "mutation($id: ID!) { joinRoom(id: $id) { status } }"
ROOM = ("query($id: ID!) { room(id: $id) { id name host { id } participantCount "
        "myMembership { role } } }")
ROOMS = """
query($filter: RoomFilter, $first: Int, $after: String) {
  rooms(filter: $filter, first: $first, after: $after) {
    totalCount
    edges { cursor node { id name } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""
USERS = "query($first: Int) { users(first: $first) { pageInfo { endCursor } } }"


async def listing(who: Persona, **variables: Any) -> dict[str, Any]:
    data = await who.gql(ROOMS, variables)
    rooms: dict[str, Any] = data["rooms"]
    return rooms


def names(page: dict[str, Any]) -> set[str]:
    return {e["node"]["name"] for e in page["edges"]}


def forged(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


# --- create, read, update, delete -----------------------------------------------------------


async def test_create_and_read_back(people: People) -> None:
    doc = people.make_user("doctor")
    created = (await doc.gql(CREATE, input={
        "name": "  Tumour board  ", "description": "Weekly", "type": "TEACHING",
        "visibility": "PUBLIC", "maxParticipants": 5}))["createRoom"]
    assert created["name"] == "Tumour board"  # trimmed
    assert (created["description"], created["type"], created["visibility"],
            created["maxParticipants"]) == ("Weekly", "TEACHING", "PUBLIC", 5)
    assert created["createdAt"] == created["updatedAt"]
    room = (await doc.gql(ROOM, id=created["id"]))["room"]
    assert room == {"id": created["id"], "name": "Tumour board", "host": {"id": doc.id},
                    "participantCount": 1, "myMembership": {"role": "HOST"}}


async def test_create_defaults_and_role_rules(people: People) -> None:
    doc, student, patient = (people.make_user(r) for r in ("doctor", "student", "patient"))
    room = (await doc.gql(CREATE, input={"name": "Defaults", "type": "CASE_DISCUSSION"}))
    assert room["createRoom"]["visibility"] == "PRIVATE"
    assert room["createRoom"]["maxParticipants"] == people.settings.room_max_participants
    assert room["createRoom"]["description"] is None
    for who, kind in ((student, "CASE_DISCUSSION"), (patient, "TEACHING")):
        assert await who.error(CREATE, input={"name": "x", "type": kind}) == "FORBIDDEN"
    teacher = people.make_user("teacher")
    assert await teacher.error(CREATE, input={"name": "x", "type": "CONSULTATION"}) == "FORBIDDEN"


async def test_update_room(people: People) -> None:
    doc = people.make_user("doctor")
    room = await make_room(doc, visibility="PRIVATE", description="old")
    updated = (await doc.gql(UPDATE, id=room["id"], input={
        "name": "Renamed", "description": None, "visibility": "PUBLIC",
        "maxParticipants": 7}))["updateRoom"]
    assert (updated["name"], updated["description"], updated["visibility"],
            updated["maxParticipants"]) == ("Renamed", None, "PUBLIC", 7)
    assert updated["updatedAt"] >= updated["createdAt"]
    # Fields not sent stay as they are.
    again = (await doc.gql(UPDATE, id=room["id"], input={"name": "Again"}))["updateRoom"]
    assert (again["visibility"], again["maxParticipants"]) == ("PUBLIC", 7)


async def test_update_needs_a_manager_and_hides_private_rooms(people: People) -> None:
    host, member, outsider = (people.make_user("doctor") for _ in range(3))
    await register(member)
    room = await make_room(host, visibility="PRIVATE", invite=[member])
    assert await member.error(UPDATE, id=room["id"], input={"name": "x"}) == "FORBIDDEN"
    assert await outsider.error(UPDATE, id=room["id"], input={"name": "x"}) == "NOT_FOUND"
    assert await outsider.error(DELETE, id=room["id"]) == "NOT_FOUND"
    assert await member.error(DELETE, id=room["id"]) == "FORBIDDEN"


async def test_max_participants_below_current_count(people: People) -> None:
    host, a, b = (people.make_user("doctor") for _ in range(3))
    await register(a, b)
    room = await make_room(host, invite=[a, b])
    error = await bad_input(host, UPDATE, "input.maxParticipants", id=room["id"],
                            input={"maxParticipants": 2})
    assert "(3)" in error["message"]
    updated = await host.gql(UPDATE, id=room["id"], input={"maxParticipants": 3})
    assert updated["updateRoom"]["maxParticipants"] == 3


async def test_soft_delete(people: People, fresh: LiveServer) -> None:
    host = people.make_user("doctor")
    other = people.make_user("doctor")
    room = await make_room(host, visibility="PUBLIC", name="Doomed")
    assert (await host.gql(DELETE, id=room["id"]))["deleteRoom"] == room["id"]

    for who in (host, other, people.make_user("admin")):
        assert (await who.gql(ROOM, id=room["id"]))["room"] is None
        page = await listing(who)
        assert page["totalCount"] == 0 and page["edges"] == []
    assert await host.error(DELETE, id=room["id"]) == "NOT_FOUND"
    assert await host.error(UPDATE, id=room["id"], input={"name": "x"}) == "NOT_FOUND"
    assert await other.error(JOIN, id=room["id"]) == "NOT_FOUND"

    rows = fresh.call(fresh.services.db.read_rows(
        "MATCH (r:Room {id: $id}) RETURN r.deletedAt AS at, r.deletedBy AS by, r.name AS name",
        id=room["id"]))
    assert len(rows) == 1
    assert isinstance(rows[0]["at"], int) and rows[0]["at"] > 0
    assert (rows[0]["by"], rows[0]["name"]) == (host.id, "Doomed")


# --- listing and filters --------------------------------------------------------------------


async def test_filters_and_total_count(people: People) -> None:
    alice, bob = people.make_user("doctor"), people.make_user("teacher")
    admin, patient = people.make_user("admin"), people.make_user("patient")
    await register(patient)
    await make_room(alice, name="Cardio teaching", type="TEACHING", visibility="PUBLIC")
    await make_room(alice, name="Cardio case", type="CASE_DISCUSSION", visibility="PRIVATE")
    await make_room(alice, name="Consult", type="CONSULTATION", visibility="PRIVATE",
                    invite=[patient])
    await make_room(bob, name="Neuro teaching", type="TEACHING", visibility="PUBLIC")
    await make_room(bob, name="Bob's secret", visibility="PRIVATE")

    cases: list[tuple[Persona, dict[str, Any] | None, set[str]]] = [
        (alice, None, {"Cardio teaching", "Cardio case", "Consult", "Neuro teaching"}),
        (bob, None, {"Cardio teaching", "Neuro teaching", "Bob's secret"}),
        (alice, {"type": "TEACHING"}, {"Cardio teaching", "Neuro teaching"}),
        (alice, {"visibility": "PRIVATE"}, {"Cardio case", "Consult"}),
        (alice, {"mine": True}, {"Cardio teaching", "Cardio case", "Consult"}),
        (bob, {"mine": True, "type": "TEACHING"}, {"Neuro teaching"}),
        (alice, {"search": "CARDIO"}, {"Cardio teaching", "Cardio case"}),
        (alice, {"search": "cardio", "visibility": "PUBLIC"}, {"Cardio teaching"}),
        (alice, {"search": "nothing matches"}, set()),
        (admin, {"visibility": "PRIVATE"}, {"Cardio case", "Consult", "Bob's secret"}),
        # Patients see only the rooms they were invited to, never the public ones.
        (patient, None, {"Consult"}),
    ]
    for who, filt, expected in cases:
        page = await listing(who, filter=filt)
        assert names(page) == expected, (who.name, filt)
        assert page["totalCount"] == len(expected), (who.name, filt)


async def test_search_too_long(people: People) -> None:
    doc = people.make_user("doctor")
    await bad_input(doc, ROOMS, "filter.search", filter={"search": "x" * 121})


# --- Relay pagination -----------------------------------------------------------------------


async def test_empty_result(people: People) -> None:
    page = await listing(people.make_user("doctor"), first=5)
    assert page == {"totalCount": 0, "edges": [], "pageInfo": {
        "hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None}}


async def test_exactly_one_full_page(people: People) -> None:
    doc = people.make_user("doctor")
    for i in range(3):
        await make_room(doc, name=f"Room {i}")
    page = await listing(doc, first=3)
    assert len(page["edges"]) == 3 and page["totalCount"] == 3
    assert page["pageInfo"]["hasNextPage"] is False
    assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
    assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
    after = await listing(doc, first=3, after=page["pageInfo"]["endCursor"])
    assert after["edges"] == [] and after["pageInfo"]["hasNextPage"] is False


async def test_walk_with_first_1(people: People) -> None:
    doc = people.make_user("doctor")
    created = [(await make_room(doc, name=f"Room {i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    for step in range(5):
        page = await listing(doc, first=1, after=cursor)
        assert len(page["edges"]) == 1 and page["totalCount"] == 5
        assert page["pageInfo"]["hasPreviousPage"] is (step > 0)
        assert page["pageInfo"]["hasNextPage"] is (step < 4)
        seen.append(page["edges"][0]["node"]["id"])
        cursor = page["pageInfo"]["endCursor"]
    assert seen == list(reversed(created))  # newest first, each exactly once
    tail = await listing(doc, first=1, after=cursor)
    assert tail["edges"] == [] and tail["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize("first", [0, -1, 101])
async def test_first_out_of_range(people: People, first: int) -> None:
    await bad_input(people.make_user("doctor"), ROOMS, "first", first=first)


async def test_first_100_is_allowed(people: People) -> None:
    page = await listing(people.make_user("doctor"), first=100)
    assert page["edges"] == []


@pytest.mark.parametrize("cursor", [
    "garbage!!", "", "bm90IGpzb24", forged("rooms"), forged({"a": 1}), "%%%",
])
async def test_malformed_cursor(people: People, cursor: str) -> None:
    await bad_input(people.make_user("doctor"), ROOMS, "after", after=cursor)


async def test_cursor_with_wrong_keys_is_refused(people: People) -> None:
    doc = people.make_user("doctor")
    await make_room(doc)
    real = (await listing(doc, first=1))["pageInfo"]["endCursor"]
    kind, fp, *_ = orjson.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))
    for keys in (["x", "y"], [1], [1, 2, 3], [None, "id"]):
        await bad_input(doc, ROOMS, "after", after=forged(kind, fp, *keys))


async def test_foreign_cursors_are_refused(people: People) -> None:
    doc, other = people.make_user("doctor"), people.make_user("doctor")
    for i in range(2):
        await make_room(doc, name=f"Teaching {i}", type="TEACHING", visibility="PUBLIC")
    users_cursor = (await doc.gql(USERS, first=1))["users"]["pageInfo"]["endCursor"]
    assert users_cursor
    await bad_input(doc, ROOMS, "after", after=users_cursor)

    teaching = await listing(doc, first=1, filter={"type": "TEACHING"})
    cursor = teaching["pageInfo"]["endCursor"]
    for filt in (None, {"type": "CASE_DISCUSSION"}, {"type": "TEACHING", "mine": True},
                 {"type": "TEACHING", "search": "t"}):
        await bad_input(doc, ROOMS, "after", filter=filt, after=cursor)
    # Another caller's cursor is not theirs to use either.
    await bad_input(other, ROOMS, "after", filter={"type": "TEACHING"}, after=cursor)
    # The same filter continues fine.
    follow = await listing(doc, first=1, filter={"type": "TEACHING"}, after=cursor)
    assert len(follow["edges"]) == 1

    rooms_cursor = (await listing(doc, first=1))["pageInfo"]["endCursor"]
    users_page = ("query($after: String) { users(first: 1, after: $after) "
                  "{ edges { node { id } } } }")
    await bad_input(doc, users_page, "after", after=rooms_cursor)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"name": ""}, "input.name"),
    ({"name": "   "}, "input.name"),
    ({"name": "n" * 121}, "input.name"),
    ({"description": "d" * 2001}, "input.description"),
    ({"maxParticipants": 1}, "input.maxParticipants"),
    ({"maxParticipants": 0}, "input.maxParticipants"),
    ({"maxParticipants": -3}, "input.maxParticipants"),
    ({"maxParticipants": 21}, "input.maxParticipants"),
])
async def test_invalid_room_input(people: People, changes: dict[str, Any], field: str) -> None:
    doc = people.make_user("doctor")
    base = {"name": "Valid", "type": "TEACHING"}
    await bad_input(doc, CREATE, field, input={**base, **changes})
    room = await make_room(doc)
    await bad_input(doc, UPDATE, field, id=room["id"], input=changes)
    page = await listing(doc)
    assert page["totalCount"] == 1  # nothing was created by the failed attempt


async def test_boundary_values_are_accepted(people: People) -> None:
    doc = people.make_user("doctor")
    limit = people.settings.room_max_participants
    room = (await doc.gql(CREATE, input={
        "name": "n" * 120, "description": "d" * 2000, "type": "TEACHING",
        "maxParticipants": limit}))["createRoom"]
    assert len(room["name"]) == 120 and len(room["description"]) == 2000
    updated = await doc.gql(UPDATE, id=room["id"], input={"maxParticipants": 2})
    assert updated["updateRoom"]["maxParticipants"] == 2


async def test_unknown_enum_value(people: People) -> None:
    doc = people.make_user("doctor")
    error = await bad_input(doc, CREATE, input={"name": "x", "type": "SURGERY"})
    assert "SURGERY" in error["message"] and "RoomType" in error["message"]
    error = await bad_input(doc, CREATE, input={"name": "x", "type": "TEACHING",
                                                "visibility": "SECRET"})
    assert "RoomVisibility" in error["message"]
    literal = 'mutation { createRoom(input: {name: "x", type: SURGERY}) { id } }'
    error = await bad_input(doc, literal)
    assert "SURGERY" in error["message"]
    await bad_input(doc, '{ rooms(filter: {visibility: HIDDEN}) { totalCount } }')
    await bad_input(doc, ROOMS, filter={"type": "SURGERY"})
    # A wrongly typed variable is bad input too, not a server error.
    await bad_input(doc, ROOMS, first="ten")


async def test_invitees_must_exist_and_fit(people: People) -> None:
    doc = people.make_user("doctor")
    await bad_input(doc, CREATE, "input.inviteUserIds", input={
        "name": "x", "type": "TEACHING", "inviteUserIds": ["nobody-here"]})
    guests = [people.make_user("doctor") for _ in range(2)]
    await register(*guests)
    await bad_input(doc, CREATE, "input.inviteUserIds", input={
        "name": "x", "type": "TEACHING", "maxParticipants": 2,
        "inviteUserIds": [g.id for g in guests]})
    await bad_input(doc, CREATE, "input.inviteUserIds", input={
        "name": "x", "type": "TEACHING", "inviteUserIds": ["x" * 129]})

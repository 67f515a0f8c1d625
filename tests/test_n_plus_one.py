"""DataLoaders batch: the number of Cypher queries an operation sends does not grow with the
number of rooms or users it returns (lists and Federation `_entities` alike)."""

from __future__ import annotations

from typing import Any

from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room

ROOMS = """
query {
  rooms(first: 50) {
    edges { node { host { displayName } participants { user { displayName } }
                   participantCount } }
  }
}"""
USERS = "query { users(first: 50) { edges { node { id displayName role } } } }"
ENTITIES = """
query($reps: [_Any!]!) {
  _entities(representations: $reps) {
    ... on Room { id name host { displayName } participants { role user { displayName } }
                  participantCount myMembership { role } }
    ... on User { id displayName role }
  }
}"""


async def counted(live: LiveServer, who: Persona, query: str, **variables: Any
                  ) -> tuple[int, dict[str, Any]]:
    """The Cypher queries one operation sent, and its data."""
    before = live.query_count()
    data = await who.gql(query, variables)
    return live.query_count() - before, data


class Ward:
    """Hosts, guests and a growing number of rooms, each with a few participants."""

    def __init__(self, people: People) -> None:
        self.hosts = [people.make_user("doctor") for _ in range(5)]
        self.guests = [people.make_user(r) for r in ("student", "teacher", "doctor", "patient")]
        self.admin = people.make_user("admin")
        self.rooms: list[dict[str, Any]] = []
        self.members: dict[str, list[Persona]] = {}

    async def setup(self) -> None:
        await register(*self.hosts, *self.guests, self.admin)

    async def grow_to(self, n: int) -> None:
        while len(self.rooms) < n:
            i = len(self.rooms)
            host = self.hosts[i % len(self.hosts)]
            guests = [self.guests[(i + k) % len(self.guests)] for k in range(3)]
            visibility = "PUBLIC" if i % 2 else "PRIVATE"
            room = await make_room(host, name=f"Room {i}", visibility=visibility, invite=guests)
            self.rooms.append(room)
            self.members[room["id"]] = [host, *guests]

    def reps(self, n: int) -> list[dict[str, str]]:
        return [{"__typename": "Room", "id": r["id"]} for r in self.rooms[:n]]


async def test_rooms_listing_is_batched(people: People, fresh: LiveServer) -> None:
    ward = Ward(people)
    await ward.setup()
    await ward.grow_to(1)
    one, data = await counted(fresh, ward.admin, ROOMS)
    assert len(data["rooms"]["edges"]) == 1
    member_one, _ = await counted(fresh, ward.guests[0], ROOMS)

    await ward.grow_to(50)
    many, data = await counted(fresh, ward.admin, ROOMS)
    edges = data["rooms"]["edges"]
    assert len(edges) == 50
    assert all(len(e["node"]["participants"]) == 4 for e in edges)
    assert all(e["node"]["participantCount"] == 4 for e in edges)
    assert many == one, (one, many)
    assert one <= 8, one

    # A member sees participants of their rooms only; still no per-room queries.
    member_many, data = await counted(fresh, ward.guests[0], ROOMS)
    assert len(data["rooms"]["edges"]) > 1
    assert member_many == member_one, (member_one, member_many)


async def test_users_listing_is_batched(people: People, fresh: LiveServer) -> None:
    viewers = [people.make_user("student"), people.make_user("admin")]
    await register(*viewers)
    few = {v.id: (await counted(fresh, v, USERS))[0] for v in viewers}
    others = [people.make_user(r) for r in ("doctor", "teacher", "student") for _ in range(16)]
    await register(*others)
    for viewer in viewers:
        count, data = await counted(fresh, viewer, USERS)
        assert len(data["users"]["edges"]) == 50
        assert count == few[viewer.id], (viewer.role, few[viewer.id], count)


async def test_room_entities_are_batched(people: People, fresh: LiveServer) -> None:
    ward = Ward(people)
    await ward.setup()
    await ward.grow_to(50)
    outsider = people.make_user("student")
    await register(outsider)
    member = ward.guests[0]
    mine = [r for r in ward.reps(50) if member in ward.members[r["id"]]]
    public = [r for i, r in enumerate(ward.reps(50)) if i % 2]
    # Exactly equal for representations of one kind: the admin sees every room, a member
    # the rooms they are in, an outsider the public rooms (without their participants).
    for who, reps in ((ward.admin, ward.reps(50)), (member, mine), (outsider, public)):
        one, data = await counted(fresh, who, ENTITIES, reps=reps[:1])
        assert data["_entities"][0] is not None
        many, data = await counted(fresh, who, ENTITIES, reps=reps)
        assert len(data["_entities"]) == len(reps) >= 25
        assert all(e is not None and e["participantCount"] == 4 for e in data["_entities"])
        assert many == one, (who.role, one, many)
    # Mixed kinds (member, public, hidden) take a few more rounds, never one per entity.
    mixed, data = await counted(fresh, member, ENTITIES, reps=ward.reps(50))
    assert all(e is not None for e in data["_entities"])
    assert mixed <= 10, mixed
    mixed, data = await counted(fresh, outsider, ENTITIES, reps=ward.reps(50))
    assert [e is None for e in data["_entities"]] == [i % 2 == 0 for i in range(50)]
    assert mixed <= 10, mixed


async def test_user_entities_are_batched(people: People, fresh: LiveServer) -> None:
    viewer = people.make_user("student")
    crowd = [people.make_user("patient" if i % 3 == 0 else "doctor") for i in range(50)]
    await register(viewer, *crowd)
    host = people.make_user("doctor")
    await register(host)
    # The viewer shares a room with some patients: those are visible to them.
    await make_room(host, invite=[viewer, crowd[0], crowd[3]])
    reps = [{"__typename": "User", "id": p.id} for p in crowd]
    one, data = await counted(fresh, viewer, ENTITIES, reps=reps[:1])
    assert data["_entities"] == [{"id": crowd[0].id, "displayName": crowd[0].name,
                                  "role": "PATIENT"}]
    many, data = await counted(fresh, viewer, ENTITIES, reps=reps)
    assert many == one, (one, many)
    visible = {e["id"] for e in data["_entities"] if e is not None}
    expected = {p.id for i, p in enumerate(crowd) if i % 3 or i in (0, 3)}
    assert visible == expected


async def test_entities_hide_what_the_caller_cannot_see(people: People) -> None:
    host, outsider, patient = (people.make_user(r) for r in ("doctor", "student", "patient"))
    await register(patient)
    private = await make_room(host, visibility="PRIVATE", name="Hidden")
    public = await make_room(host, visibility="PUBLIC", name="Open")
    reps = [{"__typename": "Room", "id": private["id"]},
            {"__typename": "Room", "id": public["id"]},
            {"__typename": "Room", "id": "no-such-room"},
            {"__typename": "User", "id": patient.id}]
    data = await outsider.gql(ENTITIES, reps=reps)
    hidden, open_room, missing, user = data["_entities"]
    assert hidden is None and missing is None
    assert open_room["name"] == "Open"
    assert open_room["participants"] == [] and open_room["myMembership"] is None
    assert user is None  # a patient the caller shares no room with
    data = await host.gql(ENTITIES, reps=reps[:1])
    assert data["_entities"][0]["name"] == "Hidden"
    # And the patient, who is in no room, sees neither.
    data = await patient.gql(ENTITIES, reps=reps[:2])
    assert data["_entities"] == [None, None]


# What a client's first screens ask for (issue 9): each page is read in one statement with
# what it lists (graph_db/pages.py), so the whole operation stays within 3 statements.
ROOMS_PAGE = """
query { rooms(filter: {mine: true}, first: 50) {
  totalCount edges { node { id name participantCount host { displayName } } } } }"""
MESSAGE_PAGE = """
query($id: ID!) { room(id: $id) { messages(last: 50) { edges { node {
  content author { displayName } reactions { emoji count reactedByMe } replyCount } } } } }"""
SEND = """mutation($r: ID!, $c: String!, $p: ID) {
  sendMessage(roomId: $r, input: {content: $c, parentId: $p}) { id } }"""
REACT = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }"


async def test_the_first_screens_take_three_statements(people: People,
                                                       fresh: LiveServer) -> None:
    ward = Ward(people)
    await ward.setup()
    reader = ward.guests[0]
    await ward.grow_to(1)
    room = ward.rooms[0]["id"]
    few_rooms, data = await counted(fresh, reader, ROOMS_PAGE)
    assert data["rooms"]["totalCount"] == 1
    authors = ward.members[room]  # the host, then the guests: authors[1] is the reader
    for i in range(3):
        await authors[i % 4].gql(SEND, r=room, c=f"early {i}", p=None)
    few_messages, _ = await counted(fresh, reader, MESSAGE_PAGE, id=room)

    await ward.grow_to(50)
    for i in range(60):
        sent = await authors[i % 4].gql(SEND, r=room, c=f"#{i}", p=None)
        message = sent["sendMessage"]["id"]
        if i % 4 == 0:
            for who, emoji in ((authors[2], "👍"), (reader, "👍"), (authors[3], "❤️")):
                await who.gql(REACT, m=message, e=emoji)
        if i % 6 == 0:
            await authors[3].gql(SEND, r=room, c=f"reply to #{i}", p=message)
    many_rooms, data = await counted(fresh, reader, ROOMS_PAGE)
    rooms = [e["node"] for e in data["rooms"]["edges"]]
    assert len(rooms) == data["rooms"]["totalCount"] > 30  # the guest is in 3 of 4 rooms
    assert all(r["participantCount"] == 4 and r["host"]["displayName"] for r in rooms)
    many_messages, data = await counted(fresh, reader, MESSAGE_PAGE, id=room)
    nodes = [e["node"] for e in data["room"]["messages"]["edges"]]
    assert [n["content"] for n in nodes] == [f"#{i}" for i in range(10, 60)]
    assert all(n["author"]["displayName"] for n in nodes)
    for i, node in zip(range(10, 60), nodes, strict=True):
        expected = ([{"emoji": "👍", "count": 2, "reactedByMe": True},
                     {"emoji": "❤️", "count": 1, "reactedByMe": False}] if i % 4 == 0 else [])
        assert node["reactions"] == expected, (i, node)
        assert node["replyCount"] == (1 if i % 6 == 0 else 0), (i, node)
    assert many_rooms == few_rooms <= 3, (few_rooms, many_rooms)
    assert many_messages == few_messages <= 3, (few_messages, many_messages)

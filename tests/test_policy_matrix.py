"""The access policy as a full matrix over the live service: role x membership x visibility x
room type x operation, one test id per cell; plus who may hold which role and who takes over
when the last host leaves, per room type.

The expected outcome of every cell is read from the tables below (README.md, "Access
policy", shows the same rules), never from resolvers/policy.py: the point is to check the
implementation against an independent statement of the rules.

Speed: the database is wiped once for the whole module (not per test, as the `people`
fixture does) and every cell builds its own small room with personas shared by the module,
so each cell costs a handful of GraphQL calls. Read-only cells of one (role, membership,
visibility) share one room.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio

from graph_db.models import Role
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROLES = ("admin", "teacher", "doctor", "student", "patient")
ROOM_TYPES = ("CASE_DISCUSSION", "TEACHING", "CONSULTATION")
VISIBILITIES = ("PUBLIC", "PRIVATE")
# The caller's standing in the room:
#   host       created the room; a student or patient (who may not create one) is made a
#              co-host by the creator instead (setParticipantRole HOST)
#   moderator  invited, then promoted with setParticipantRole MODERATOR
#   member     invited (createRoom's inviteUserIds: the same edges as inviteToRoom's)
#   left       invited with inviteToRoom, then leaveRoom (the invitation stays)
#   none       never in the room, never invited
STATES = ("host", "moderator", "member", "left", "none")
# The room operations are checked in CASE_DISCUSSION rooms and in CONSULTATION rooms (the
# clinical ones, where patients are, and whose hosts can only be doctors and admins).
# TEACHING rooms have the same creators as CASE_DISCUSSION (CREATE_RULES), so every rule
# below comes out the same for them.
MATRIX_ROOM_TYPES = ("CASE_DISCUSSION", "CONSULTATION")

# Teachers, doctors and students are alike in rooms; only creating rooms and finding
# patients (below) tell them apart.
CALLER_CLASS = {"admin": "admin", "teacher": "other", "doctor": "other", "student": "other",
                "patient": "patient"}

# ---------------------------------------------------------------------------------------
# The tables. A cell "A|B" means A for a PUBLIC room and B for a PRIVATE one.
#   ok         the operation succeeds (queries: the room is returned / listed)
#   hidden     room(id) is null, the listing leaves the room out
#   all        the field lists everything (participants: every member; joinRequests: the
#              pending request)
#   empty      the room is visible but the field is an empty list
#   JOINED / PENDING   joinRoom's status
#   other      the extensions.code of the single error. NOT_FOUND whenever the room (or
#              join request) is invisible to the caller; FORBIDDEN only for a visible one.
# ---------------------------------------------------------------------------------------

CREATE_RULES = """
# role      CASE_DISCUSSION  TEACHING   CONSULTATION
admin       ok               ok         ok
teacher     ok               ok         FORBIDDEN
doctor      ok               ok         ok
student     FORBIDDEN        FORBIDDEN  FORBIDDEN
patient     FORBIDDEN        FORBIDDEN  FORBIDDEN
"""

# A "-" cell is a standing no caller of that class can have: patients never host (they may
# not open a room) nor moderate. Those cells are not collected at all (test_who_may_hold_roles
# shows setParticipantRole refusing them).
ROOM_RULES = """
# operation               caller   host  moderator  member     left       none
room                      admin    ok    ok         ok         ok         ok
room                      other    ok    ok         ok         ok         ok|hidden
room                      patient  -     -          ok         ok         hidden
rooms                     admin    ok    ok         ok         ok         ok
rooms                     other    ok    ok         ok         ok         ok|hidden
rooms                     patient  -     -          ok         ok         hidden
participants              admin    all   all        all        all        all
participants              other    all   all        all        empty      empty|hidden
participants              patient  -     -          all        empty      hidden
joinRequests              admin    all   all        all        all        all
joinRequests              other    all   all        empty      empty      empty|hidden
joinRequests              patient  -     -          empty      empty      hidden
updateRoom                admin    ok    ok         ok         ok         ok
updateRoom                other    ok    ok         FORBIDDEN  FORBIDDEN  FORBIDDEN|NOT_FOUND
updateRoom                patient  -     -          FORBIDDEN  FORBIDDEN  NOT_FOUND
deleteRoom                admin    ok    ok         ok         ok         ok
deleteRoom                other    ok    FORBIDDEN  FORBIDDEN  FORBIDDEN  FORBIDDEN|NOT_FOUND
deleteRoom                patient  -     -          FORBIDDEN  FORBIDDEN  NOT_FOUND
inviteToRoom              admin    ok    ok         ok         ok         ok
inviteToRoom              other    ok    ok         FORBIDDEN  FORBIDDEN  FORBIDDEN|NOT_FOUND
inviteToRoom              patient  -     -          FORBIDDEN  FORBIDDEN  NOT_FOUND
removeParticipant:HOST    admin    ok    ok         ok         ok         ok
removeParticipant:HOST    other    ok    FORBIDDEN  FORBIDDEN  FORBIDDEN  FORBIDDEN|NOT_FOUND
removeParticipant:HOST    patient  -     -          FORBIDDEN  FORBIDDEN  NOT_FOUND
removeParticipant:MOD     admin    ok    ok         ok         ok         ok
removeParticipant:MOD     other    ok    FORBIDDEN  FORBIDDEN  FORBIDDEN  FORBIDDEN|NOT_FOUND
removeParticipant:MOD     patient  -     -          FORBIDDEN  FORBIDDEN  NOT_FOUND
removeParticipant:MEMBER  admin    ok    ok         ok         ok         ok
removeParticipant:MEMBER  other    ok    ok         FORBIDDEN  FORBIDDEN  FORBIDDEN|NOT_FOUND
removeParticipant:MEMBER  patient  -     -          FORBIDDEN  FORBIDDEN  NOT_FOUND
removeParticipant:NOBODY  admin    NOT_FOUND  NOT_FOUND  NOT_FOUND  NOT_FOUND  NOT_FOUND
removeParticipant:NOBODY  other    NOT_FOUND  NOT_FOUND  FORBIDDEN  FORBIDDEN  FORBIDDEN|NOT_FOUND
removeParticipant:NOBODY  patient  -          -          FORBIDDEN  FORBIDDEN  NOT_FOUND
decideJoinRequest         admin    ok    ok         ok         ok         ok
decideJoinRequest         other    ok    ok         NOT_FOUND  NOT_FOUND  NOT_FOUND
decideJoinRequest         patient  -     -          NOT_FOUND  NOT_FOUND  NOT_FOUND
setParticipantRole        admin    ok    ok         ok         ok         ok
setParticipantRole        other    ok    FORBIDDEN  FORBIDDEN  FORBIDDEN  FORBIDDEN|NOT_FOUND
setParticipantRole        patient  -     -          FORBIDDEN  FORBIDDEN  NOT_FOUND
joinRoom                  admin    JOINED  JOINED   JOINED     JOINED     JOINED
joinRoom                  other    JOINED  JOINED   JOINED     JOINED     JOINED|PENDING
joinRoom                  patient  -       -        JOINED     JOINED     NOT_FOUND
leaveRoom                 admin    ok    ok         ok         CONFLICT   CONFLICT
leaveRoom                 other    ok    ok         ok         CONFLICT   CONFLICT|NOT_FOUND
leaveRoom                 patient  -     -          ok         CONFLICT   NOT_FOUND
"""
# removeParticipant:T removes another participant whose role is T (HOST: a co-host, MOD: a
# moderator, MEMBER: a member); NOBODY is a user who is not in the room ("participant not
# found" for those who may remove people, and the same FORBIDDEN as any other target for
# those who may not, so that removeParticipant cannot probe who is in a room).

# user(id) and users(search): may the viewer find the target? Any non-patient, or a patient
# who is a stranger (no room in common), a roommate (in one room with the viewer now), an
# ex-roommate (was; the patient left), a deleted-roommate (their only common room was
# deleted), or the viewer themself.
USER_RULES = """
#         any          patient:
# viewer  non-patient  stranger  roommate  ex-roommate  deleted-roommate  self
admin     seen         seen      seen      seen         seen              seen
teacher   seen         seen      seen      seen         seen              seen
doctor    seen         seen      seen      seen         seen              seen
student   seen         hidden    seen      hidden       hidden            seen
patient   seen         hidden    seen      hidden       hidden            seen
"""
RELATIONS = ("stranger", "roommate", "ex-roommate", "deleted-roommate")


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines() if not line.startswith("#")]


def _parse_create(text: str) -> dict[tuple[str, str], str]:
    return {(role, room_type): cell for role, *cells in _rows(text)
            for room_type, cell in zip(ROOM_TYPES, cells, strict=True)}


def _parse_rooms(text: str) -> dict[tuple[str, str, str, str], str]:
    table: dict[tuple[str, str, str, str], str] = {}
    for op, caller, *cells in _rows(text):
        for state, cell in zip(STATES, cells, strict=True):
            public, _, private = cell.partition("|")
            table[op, caller, state, "PUBLIC"] = public
            table[op, caller, state, "PRIVATE"] = private or public
    return table


def _parse_users(text: str) -> dict[tuple[str, str], str]:
    columns = ("non-patient", *RELATIONS, "self")
    return {(viewer, column): cell for viewer, *cells in _rows(text)
            for column, cell in zip(columns, cells, strict=True)}


CREATE = _parse_create(CREATE_RULES)
RULES = _parse_rooms(ROOM_RULES)
USERS = _parse_users(USER_RULES)
ROOM_OPS = tuple(dict.fromkeys(op for op, *_ in _rows(ROOM_RULES)))


def expected(op: str, role: str, state: str, visibility: str) -> str:
    return RULES[op, CALLER_CLASS[role], state, visibility]


def user_expected(viewer: str, target: str, relation: str) -> str:
    if relation == "self":
        return USERS[viewer, "self"]
    if target != "patient":
        return USERS[viewer, "non-patient"]
    return USERS[viewer, relation]


def possible(role: str, state: str, room_type: str) -> bool:
    """Hosts are people who could have opened the room; patients never moderate."""
    if state == "host":
        return CREATE[role, room_type] == "ok"
    return not (state == "moderator" and role == "patient")


async def test_tables_are_complete() -> None:
    assert len(CREATE) == len(ROLES) * len(ROOM_TYPES)
    assert {role for role, _ in CREATE} == set(ROLES)
    assert len(RULES) == len(ROOM_OPS) * 3 * len(STATES) * len(VISIBILITIES)
    assert len(USERS) == len(ROLES) * 6
    # "-" marks exactly the standings no member of a caller class can have in any room.
    for (op, caller, state, vis), cell in RULES.items():
        members = [r for r in ROLES if CALLER_CLASS[r] == caller]
        anyone = any(possible(r, state, t) for r in members for t in ROOM_TYPES)
        assert (cell == "-") is (not anyone), (op, caller, state, vis)


# ---------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------

ME = "{ me { id } }"
ROOM = "query($id: ID!) { room(id: $id) { id } }"
ROOMS = """query($search: String!) {
  rooms(filter: {search: $search}) { edges { node { id } } totalCount }
}"""
PARTICIPANTS = "query($id: ID!) { room(id: $id) { participants { role user { id } } } }"
JOIN_REQUESTS = "query($id: ID!) { room(id: $id) { joinRequests { id user { id } } } }"
UPDATE = """mutation($id: ID!, $input: UpdateRoomInput!) {
  updateRoom(id: $id, input: $input) { id name visibility }
}"""
DELETE = "mutation($id: ID!) { deleteRoom(id: $id) }"
INVITE = """mutation($roomId: ID!, $userIds: [ID!]!) {
  inviteToRoom(roomId: $roomId, userIds: $userIds) { id participants { role user { id } } }
}"""
REMOVE = """mutation($roomId: ID!, $userId: ID!) {
  removeParticipant(roomId: $roomId, userId: $userId) { id participants { user { id } } }
}"""
DECIDE = """mutation($id: ID!) {
  decideJoinRequest(id: $id, approve: true) { id status user { id } }
}"""
SET_ROLE = """mutation($roomId: ID!, $userId: ID!, $role: ParticipantRole!) {
  setParticipantRole(roomId: $roomId, userId: $userId, role: $role) { role user { id } }
}"""
JOIN = """mutation($id: ID!) {
  joinRoom(id: $id) { status room { id myMembership { role } } request { id status } }
}"""
LEAVE = "mutation($id: ID!) { leaveRoom(id: $id) { id } }"
CREATE_ROOM = """mutation($input: CreateRoomInput!) {
  createRoom(input: $input) { id type visibility host { id } myMembership { role } }
}"""
USER = "query($id: ID!) { user(id: $id) { id } }"
USERS_SEARCH = "query($search: String!) { users(search: $search) { edges { node { id } } } }"


async def attempt(persona: Persona, query: str, **variables: Any
                  ) -> tuple[str, dict[str, Any]]:
    """("ok", data) or (the single error code, {})."""
    body = await persona.post(query, variables)
    if body.get("errors"):
        codes = {e.get("extensions", {}).get("code") for e in body["errors"]}
        assert len(codes) == 1, body["errors"]
        return str(codes.pop()), {}
    data: dict[str, Any] = body["data"]
    return "ok", data


# ---------------------------------------------------------------------------------------
# The cast and the rooms
# ---------------------------------------------------------------------------------------

TARGET_ROLES = {"HOST": "HOST", "MOD": "MODERATOR", "MEMBER": "MEMBER"}


@dataclass
class Crowd:
    """Personas shared by the whole module, all on one HTTP client (tokens differ)."""

    people: People
    client: httpx.AsyncClient
    callers: dict[str, Persona] = field(init=False)
    owner: Persona = field(init=False)  # creates the rooms the caller does not host
    targets: dict[str, Persona] = field(init=False)  # participants to remove or promote
    seconds: dict[str, Persona] = field(init=False)  # a second persona of each role
    requester: Persona = field(init=False)  # asks to join
    invitee: Persona = field(init=False)  # gets invited; never in a room
    read_rooms: dict[tuple[str, str, str], Built] = field(default_factory=dict)
    acquaintances: dict[tuple[str, str, str], tuple[Persona, Persona]] = field(
        default_factory=dict)

    def new(self, role: str, label: str = "") -> Persona:
        name = f"{label or role} {uuid.uuid4().hex[:12]}"
        user_id = f"{role}-{uuid.uuid4().hex[:12]}"
        token = self.people.token_for(user_id, name, Role(role))
        return Persona(user_id, name, Role(role), token, self.client)

    async def touch(self, *personas: Persona) -> None:
        """A first request makes each persona a user node (so that it can be invited)."""
        for p in personas:
            await p.gql(ME)

    async def start(self) -> None:
        self.callers = {role: self.new(role, f"caller {role}") for role in ROLES}
        self.seconds = {role: self.new(role, f"second {role}") for role in ROLES}
        self.owner = self.new("doctor", "owner")
        self.targets = {t: self.new("doctor", f"target {t}") for t in TARGET_ROLES}
        self.requester = self.new("doctor", "requester")
        self.invitee = self.new("doctor", "invitee")
        await self.touch(*self.callers.values(), *self.seconds.values(), self.owner,
                         *self.targets.values(), self.requester, self.invitee)


@dataclass
class Built:
    id: str
    name: str
    creator: Persona
    members: dict[str, str]  # user id -> participant role
    request_id: str | None = None


async def build(crowd: Crowd, role: str, state: str, visibility: str, room_type: str, *,
                targets: tuple[str, ...] = (), request: bool = False) -> Built:
    """A room of `room_type` where the caller of `role` stands in `state` (a host created
    it), with the given target participants (doctors) and, when asked, a pending join
    request. A request can only be made to a PRIVATE room, so a PUBLIC room is made PUBLIC
    after it."""
    assert possible(role, state, room_type), "impossible cells are not collected"
    caller = crowd.callers[role]
    creates = state == "host"
    creator = caller if creates else crowd.owner
    name = f"matrix {uuid.uuid4().hex}"
    invited = [crowd.targets[t] for t in targets]
    if state in ("moderator", "member"):
        invited.append(caller)
    room = await make_room(creator, visibility="PRIVATE" if request else visibility,
                           type=room_type, name=name, invite=invited)
    built = Built(room["id"], name, creator,
                  {creator.id: "HOST", **{p.id: "MEMBER" for p in invited}})
    for t in targets:
        if TARGET_ROLES[t] != "MEMBER":
            await set_role(built, crowd.targets[t], TARGET_ROLES[t])
    if state == "moderator":
        await set_role(built, caller, "MODERATOR")
    elif state == "left":
        await creator.gql(INVITE, roomId=built.id, userIds=[caller.id])
        await caller.gql(LEAVE, id=built.id)
    if request:
        joined = await crowd.requester.gql(JOIN, id=built.id)
        assert joined["joinRoom"]["status"] == "PENDING", joined
        built.request_id = joined["joinRoom"]["request"]["id"]
        if visibility == "PUBLIC":
            await creator.gql(UPDATE, id=built.id, input={"visibility": "PUBLIC"})
    return built


async def set_role(built: Built, persona: Persona, role: str) -> None:
    data = await built.creator.gql(SET_ROLE, roomId=built.id, userId=persona.id, role=role)
    assert data["setParticipantRole"]["role"] == role
    built.members[persona.id] = role


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def crowd(live: LiveServer) -> AsyncIterator[Crowd]:
    live.wipe()
    people = People(live.settings, live.url)
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        cast = Crowd(people, client)
        await cast.start()
        yield cast
    await people.aclose()


SHORT = {"CASE_DISCUSSION": "case", "CONSULTATION": "consult"}


def cells(ops: tuple[str, ...]) -> list[Any]:
    """Every possible (operation, role, standing, visibility, room type): standings a role
    cannot have in that type of room are left out, not skipped."""
    return [pytest.param(op, role, state, vis, room_type,
                         id=f"{op}-{SHORT[room_type]}-{role}-{state}-{vis}")
            for room_type in MATRIX_ROOM_TYPES for op in ops for role in ROLES
            for state in STATES for vis in VISIBILITIES if possible(role, state, room_type)]


CELL_ARGS = ("op", "role", "state", "visibility", "room_type")


# ---------------------------------------------------------------------------------------
# createRoom
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "room_type", "visibility"), [
    pytest.param(role, t, vis, id=f"createRoom-{role}-{t}-{vis}")
    for role in ROLES for t in ROOM_TYPES for vis in VISIBILITIES])
async def test_create_room(crowd: Crowd, role: str, room_type: str, visibility: str) -> None:
    caller = crowd.callers[role]
    code, data = await attempt(caller, CREATE_ROOM, input={
        "name": f"matrix {uuid.uuid4().hex}", "type": room_type, "visibility": visibility})
    assert code == CREATE[role, room_type]
    if code == "ok":
        created = data["createRoom"]
        assert (created["type"], created["visibility"]) == (room_type, visibility)
        assert created["host"]["id"] == caller.id
        assert created["myMembership"] == {"role": "HOST"}


@pytest.mark.parametrize(("role", "room_type", "target"), [
    pytest.param(role, t, target, id=f"holdRole-{role}-{t}-{target}")
    for role in ROLES for t in ROOM_TYPES for target in ("HOST", "MODERATOR")])
async def test_who_may_hold_roles(crowd: Crowd, role: str, room_type: str,
                                  target: str) -> None:
    """Co-hosts are people who could have created the room; anyone but a patient moderates."""
    owner = crowd.owner
    member = crowd.callers[role]
    room = await make_room(owner, type=room_type, name=f"roles {uuid.uuid4().hex}",
                           invite=[member])
    code, _ = await attempt(owner, SET_ROLE, roomId=room["id"], userId=member.id, role=target)
    allowed = (CREATE[role, room_type] == "ok") if target == "HOST" else role != "patient"
    assert code == ("ok" if allowed else "BAD_USER_INPUT")


# ---------------------------------------------------------------------------------------
# Queries: room(id), rooms, Room.participants, Room.joinRequests
# ---------------------------------------------------------------------------------------

async def read_room(crowd: Crowd, role: str, state: str, visibility: str,
                    room_type: str) -> Built:
    """Queries change nothing, so the cells of one (role, state, visibility, type) share a
    room."""
    key = (role, state, visibility, room_type)
    if key not in crowd.read_rooms:
        crowd.read_rooms[key] = await build(crowd, role, state, visibility, room_type,
                                            targets=("MEMBER",), request=True)
    return crowd.read_rooms[key]


@pytest.mark.parametrize(CELL_ARGS, cells(("room", "rooms", "participants", "joinRequests")))
async def test_query(crowd: Crowd, op: str, role: str, state: str, visibility: str,
                     room_type: str) -> None:
    want = expected(op, role, state, visibility)
    built = await read_room(crowd, role, state, visibility, room_type)
    caller = crowd.callers[role]
    if op == "rooms":
        listing = (await caller.gql(ROOMS, search=built.name))["rooms"]
        ids = [e["node"]["id"] for e in listing["edges"]]
        assert (ids, listing["totalCount"]) == (([built.id], 1) if want == "ok" else ([], 0))
        return
    query = {"room": ROOM, "participants": PARTICIPANTS, "joinRequests": JOIN_REQUESTS}[op]
    room = (await caller.gql(query, id=built.id))["room"]
    if want == "hidden":
        assert room is None
    elif op == "room":
        assert want == "ok"
        assert room == {"id": built.id}
    elif op == "participants":
        found = {p["user"]["id"]: p["role"] for p in room["participants"]}
        assert found == (built.members if want == "all" else {})
    else:
        found_requests = [(j["id"], j["user"]["id"]) for j in room["joinRequests"]]
        assert found_requests == ([(built.request_id, crowd.requester.id)] if want == "all"
                                  else [])


# ---------------------------------------------------------------------------------------
# Mutations on the room and its people
# ---------------------------------------------------------------------------------------

async def update_room(crowd: Crowd, caller: Persona, built: Built) -> str:
    code, data = await attempt(caller, UPDATE, id=built.id, input={"name": "renamed"})
    if code == "ok":
        assert data["updateRoom"]["id"] == built.id
        assert data["updateRoom"]["name"] == "renamed"
    return code


async def delete_room(crowd: Crowd, caller: Persona, built: Built) -> str:
    code, data = await attempt(caller, DELETE, id=built.id)
    if code == "ok":
        assert data["deleteRoom"] == built.id
        assert (await crowd.owner.gql(ROOM, id=built.id))["room"] is None
    return code


async def invite_to_room(crowd: Crowd, caller: Persona, built: Built) -> str:
    code, data = await attempt(caller, INVITE, roomId=built.id, userIds=[crowd.invitee.id])
    if code == "ok":
        found = {p["user"]["id"]: p["role"] for p in data["inviteToRoom"]["participants"]}
        assert found == {**built.members, crowd.invitee.id: "MEMBER"}
    return code


async def decide_join_request(crowd: Crowd, caller: Persona, built: Built) -> str:
    code, data = await attempt(caller, DECIDE, id=built.request_id)
    if code == "ok":
        assert data["decideJoinRequest"] == {"id": built.request_id, "status": "APPROVED",
                                             "user": {"id": crowd.requester.id}}
    return code


async def set_participant_role(crowd: Crowd, caller: Persona, built: Built) -> str:
    member = crowd.targets["MEMBER"]
    code, data = await attempt(caller, SET_ROLE, roomId=built.id, userId=member.id,
                               role="MODERATOR")
    if code == "ok":
        assert data["setParticipantRole"] == {"role": "MODERATOR", "user": {"id": member.id}}
    return code


async def leave_room(crowd: Crowd, caller: Persona, built: Built) -> str:
    code, data = await attempt(caller, LEAVE, id=built.id)
    if code == "ok":
        assert data["leaveRoom"] == {"id": built.id}
        if built.creator is not caller:
            left = await built.creator.gql(PARTICIPANTS, id=built.id)
            assert caller.id not in {p["user"]["id"] for p in left["room"]["participants"]}
    return code


MUTATIONS = {"updateRoom": update_room, "deleteRoom": delete_room,
             "inviteToRoom": invite_to_room, "decideJoinRequest": decide_join_request,
             "setParticipantRole": set_participant_role, "leaveRoom": leave_room}


@pytest.mark.parametrize(CELL_ARGS, cells(tuple(MUTATIONS)))
async def test_mutation(crowd: Crowd, op: str, role: str, state: str, visibility: str,
                        room_type: str) -> None:
    want = expected(op, role, state, visibility)
    built = await build(crowd, role, state, visibility, room_type,
                        targets=("MEMBER",) if op == "setParticipantRole" else (),
                        request=op == "decideJoinRequest")
    assert await MUTATIONS[op](crowd, crowd.callers[role], built) == want


@pytest.mark.parametrize(CELL_ARGS, cells(
    ("removeParticipant:HOST", "removeParticipant:MOD", "removeParticipant:MEMBER",
     "removeParticipant:NOBODY")))
async def test_remove_participant(crowd: Crowd, op: str, role: str, state: str,
                                  visibility: str, room_type: str) -> None:
    want = expected(op, role, state, visibility)
    target_kind = op.partition(":")[2]
    caller = crowd.callers[role]
    built = await build(crowd, role, state, visibility, room_type,
                        targets=() if target_kind == "NOBODY" else (target_kind,))
    target = crowd.invitee if target_kind == "NOBODY" else crowd.targets[target_kind]
    code, data = await attempt(caller, REMOVE, roomId=built.id, userId=target.id)
    assert code == want
    if code == "ok":
        remaining = {p["user"]["id"] for p in data["removeParticipant"]["participants"]}
        assert remaining == set(built.members) - {target.id}


@pytest.mark.parametrize(CELL_ARGS, cells(("joinRoom",)))
async def test_join_room(crowd: Crowd, op: str, role: str, state: str,
                         visibility: str, room_type: str) -> None:
    want = expected(op, role, state, visibility)
    caller = crowd.callers[role]
    built = await build(crowd, role, state, visibility, room_type)
    code, data = await attempt(caller, JOIN, id=built.id)
    outcome = data["joinRoom"]["status"] if code == "ok" else code
    assert outcome == want
    if outcome == "JOINED":
        standing = {"host": "HOST", "moderator": "MODERATOR"}.get(state, "MEMBER")
        assert data["joinRoom"]["room"]["myMembership"] == {"role": standing}
        assert data["joinRoom"]["request"] is None
    elif outcome == "PENDING":
        assert data["joinRoom"]["room"]["myMembership"] is None
        assert data["joinRoom"]["request"]["status"] == "PENDING"


# ---------------------------------------------------------------------------------------
# "Not found" and "not yours" look alike: a room id that does not exist
# ---------------------------------------------------------------------------------------

MISSING_OPS = ("room", "updateRoom", "deleteRoom", "inviteToRoom", "removeParticipant",
               "decideJoinRequest", "setParticipantRole", "joinRoom", "leaveRoom", "user")


@pytest.mark.parametrize(("op", "role"), [
    pytest.param(op, role, id=f"{op}-{role}-missing") for op in MISSING_OPS for role in ROLES])
async def test_missing(crowd: Crowd, op: str, role: str) -> None:
    caller = crowd.callers[role]
    missing = str(uuid.uuid4())
    if op in ("room", "user"):
        data = await caller.gql(ROOM if op == "room" else USER, id=missing)
        assert data[op] is None
        return
    cases: dict[str, dict[str, Any]] = {
        "updateRoom": {"id": missing, "input": {"name": "x"}},
        "deleteRoom": {"id": missing},
        "inviteToRoom": {"roomId": missing, "userIds": [crowd.invitee.id]},
        "removeParticipant": {"roomId": missing, "userId": crowd.invitee.id},
        "decideJoinRequest": {"id": missing},
        "setParticipantRole": {"roomId": missing, "userId": crowd.invitee.id,
                               "role": "MODERATOR"},
        "joinRoom": {"id": missing},
        "leaveRoom": {"id": missing},
    }
    variables = cases[op]
    query = {"updateRoom": UPDATE, "deleteRoom": DELETE, "inviteToRoom": INVITE,
             "removeParticipant": REMOVE, "decideJoinRequest": DECIDE,
             "setParticipantRole": SET_ROLE, "joinRoom": JOIN, "leaveRoom": LEAVE}[op]
    assert await caller.error(query, variables) == "NOT_FOUND"


# ---------------------------------------------------------------------------------------
# user(id) and users(search): who finds patients
# ---------------------------------------------------------------------------------------

def user_cells() -> list[Any]:
    found = []
    for op in ("user", "users"):
        for viewer in ROLES:
            found.append(pytest.param(op, viewer, viewer, "self", id=f"{op}-{viewer}-self"))
            for target in ROLES:
                for relation in RELATIONS:
                    found.append(pytest.param(op, viewer, target, relation,
                                              id=f"{op}-{viewer}-sees-{target}-{relation}"))
    return found


async def acquaint(crowd: Crowd, viewer_role: str, target_role: str, relation: str
                   ) -> tuple[Persona, Persona]:
    """A fresh viewer and target in `relation`; shared by the user and users cells."""
    key = (viewer_role, target_role, relation)
    if key not in crowd.acquaintances:
        viewer = crowd.new(viewer_role)
        target = viewer if relation == "self" else crowd.new(target_role)
        await crowd.touch(viewer) if target is viewer else await crowd.touch(viewer, target)
        if relation not in {"stranger", "self"}:
            room = await make_room(crowd.owner, invite=[viewer, target],
                                   name=f"matrix {uuid.uuid4().hex}")
            if relation == "ex-roommate":
                await target.gql(LEAVE, id=room["id"])
            elif relation == "deleted-roommate":
                await crowd.owner.gql(DELETE, id=room["id"])
        crowd.acquaintances[key] = (viewer, target)
    return crowd.acquaintances[key]


@pytest.mark.parametrize(("op", "viewer_role", "target_role", "relation"), user_cells())
async def test_user_visibility(crowd: Crowd, op: str, viewer_role: str, target_role: str,
                               relation: str) -> None:
    want = user_expected(viewer_role, target_role, relation)
    viewer, target = await acquaint(crowd, viewer_role, target_role, relation)
    if op == "user":
        found = (await viewer.gql(USER, id=target.id))["user"]
        assert found == ({"id": target.id} if want == "seen" else None)
    else:
        edges = (await viewer.gql(USERS_SEARCH, search=target.name))["users"]["edges"]
        assert [e["node"]["id"] for e in edges] == ([target.id] if want == "seen" else [])


# ---------------------------------------------------------------------------------------
# Host hand-over: when the last host leaves, the room passes to the earliest moderator, else
# to the longest-standing member, among those who could have opened that type of room
# (CREATE_RULES); nobody else is ever made host.
# ---------------------------------------------------------------------------------------

HAND_OVER = """query($id: ID!) {
  room(id: $id) { host { id } participants { role user { id } } }
}"""


def may_host(role: str, room_type: str) -> bool:
    return CREATE[role, room_type] == "ok"


def hand_over_cells() -> list[Any]:
    found = []
    for t in ROOM_TYPES:
        for first in ROLES:  # joined first, both plain members
            for second in ROLES:
                found.append(pytest.param(t, (first, "MEMBER"), (second, "MEMBER"),
                                          id=f"handOver-{t}-{first}-then-{second}"))
        for mod in ROLES:  # an eligible doctor joined first, a later moderator
            if mod != "patient":
                found.append(pytest.param(t, ("doctor", "MEMBER"), (mod, "MODERATOR"),
                                          id=f"handOver-{t}-doctor-then-moderator-{mod}"))
    return found


@pytest.mark.parametrize(("room_type", "first", "second"), hand_over_cells())
async def test_host_hand_over(crowd: Crowd, room_type: str, first: tuple[str, str],
                              second: tuple[str, str]) -> None:
    owner = crowd.owner
    a, b = crowd.callers[first[0]], crowd.seconds[second[0]]
    room = await make_room(owner, type=room_type, name=f"handover {uuid.uuid4().hex}")
    built = Built(room["id"], room["name"], owner, {owner.id: "HOST"})
    for persona, role in ((a, first[1]), (b, second[1])):  # one at a time: joinedAt order
        await owner.gql(INVITE, roomId=built.id, userIds=[persona.id])
        if role != "MEMBER":
            await set_role(built, persona, role)
    await owner.gql(LEAVE, id=built.id)

    moderators = [p for p, (role, standing) in ((a, first), (b, second))
                  if standing == "MODERATOR" and may_host(role, room_type)]
    members = [p for p, (role, _) in ((a, first), (b, second)) if may_host(role, room_type)]
    heir = (moderators or members or [None])[0]
    data = (await crowd.callers["admin"].gql(HAND_OVER, id=built.id))["room"]
    roles = {p["user"]["id"]: p["role"] for p in data["participants"]}
    assert roles == {a.id: "HOST" if heir is a else first[1],
                     b.id: "HOST" if heir is b else second[1]}
    if heir is not None:
        assert data["host"]["id"] == heir.id

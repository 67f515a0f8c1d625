"""Membership over real HTTP: joining, join requests, leaving and host hand-over, invitations,
removal, and capacity under concurrent joins, approvals and invitations."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from tests.gql_helpers import bad_input, register
from tests.personas import People, Persona, make_room

JOIN = """
mutation($id: ID!, $message: String) {
  joinRoom(id: $id, message: $message) {
    status room { id } request { id status message user { id } }
  }
}"""
LEAVE = "mutation($id: ID!) { leaveRoom(id: $id) { id } }"
INVITE = ("mutation($room: ID!, $users: [ID!]!) "
          "{ inviteToRoom(roomId: $room, userIds: $users) { id participantCount } }")
REMOVE = ("mutation($room: ID!, $user: ID!) "
          "{ removeParticipant(roomId: $room, userId: $user) { id } }")
DECIDE = ("mutation($id: ID!, $approve: Boolean!) { decideJoinRequest(id: $id, approve: $approve)"
          " { id status decidedBy { id } decidedAt user { id } room { id } } }")
SET_ROLE = ("mutation($room: ID!, $user: ID!, $role: ParticipantRole!) "
            "{ setParticipantRole(roomId: $room, userId: $user, role: $role) { role } }")
ROOM = """
query($id: ID!) {
  room(id: $id) {
    id host { id } participantCount
    participants { role user { id } }
    joinRequests { id status user { id } }
  }
}"""


async def room_of(who: Persona, room_id: str) -> dict[str, Any] | None:
    room: dict[str, Any] | None = (await who.gql(ROOM, id=room_id))["room"]
    return room


async def members(who: Persona, room_id: str) -> dict[str, str]:
    room = await room_of(who, room_id)
    assert room is not None
    return {p["user"]["id"]: p["role"] for p in room["participants"]}


async def moderated_room(people: People, **kw: Any) -> tuple[Persona, Persona, dict[str, Any]]:
    """A room with a host and a moderator."""
    host, mod = people.make_user("doctor"), people.make_user("doctor")
    await register(mod)
    room = await make_room(host, invite=[mod], **kw)
    await host.gql(SET_ROLE, room=room["id"], user=mod.id, role="MODERATOR")
    return host, mod, room


# --- joining --------------------------------------------------------------------------------


async def test_join_public_room(people: People) -> None:
    host, doc = people.make_user("doctor"), people.make_user("student")
    room = await make_room(host, visibility="PUBLIC")
    joined = (await doc.gql(JOIN, id=room["id"]))["joinRoom"]
    assert joined == {"status": "JOINED", "room": {"id": room["id"]}, "request": None}
    assert await members(host, room["id"]) == {host.id: "HOST", doc.id: "MEMBER"}
    again = (await doc.gql(JOIN, id=room["id"]))["joinRoom"]
    assert again["status"] == "JOINED"
    assert (await room_of(host, room["id"]) or {})["participantCount"] == 2


async def test_join_unknown_room_and_patients(people: People) -> None:
    host, patient = people.make_user("doctor"), people.make_user("patient")
    public = await make_room(host, visibility="PUBLIC")
    assert await patient.error(JOIN, id=public["id"]) == "NOT_FOUND"
    assert await host.error(JOIN, id="no-such-room") == "NOT_FOUND"
    assert await host.error(JOIN, id="x" * 500) == "NOT_FOUND"


async def test_private_room_creates_a_pending_request(people: People) -> None:
    host, mod, room = await moderated_room(people)
    member, doc = people.make_user("student"), people.make_user("doctor")
    await register(member)
    await host.gql(INVITE, room=room["id"], users=[member.id])

    first = (await doc.gql(JOIN, id=room["id"], message=" please "))["joinRoom"]
    assert first["status"] == "PENDING"
    request = first["request"]
    assert request["status"] == "PENDING" and request["message"] == "please"
    assert request["user"]["id"] == doc.id
    second = (await doc.gql(JOIN, id=room["id"]))["joinRoom"]
    assert second["status"] == "PENDING" and second["request"]["id"] == request["id"]

    for manager in (host, mod, people.make_user("admin")):
        seen = (await room_of(manager, room["id"]) or {})["joinRequests"]
        assert [(j["id"], j["status"], j["user"]["id"]) for j in seen] == [
            (request["id"], "PENDING", doc.id)]
    assert (await room_of(member, room["id"]) or {})["joinRequests"] == []
    # Waiting on their request they see the room as outsiders see a PUBLIC one: no people.
    waiting = await room_of(doc, room["id"])
    assert waiting is not None and waiting["participants"] == []
    assert waiting["joinRequests"] == []
    assert doc.id not in await members(host, room["id"])


async def test_approve_and_reject(people: People) -> None:
    host, mod, room = await moderated_room(people)
    yes, no = people.make_user("doctor"), people.make_user("teacher")
    req_yes = (await yes.gql(JOIN, id=room["id"]))["joinRoom"]["request"]["id"]
    req_no = (await no.gql(JOIN, id=room["id"]))["joinRoom"]["request"]["id"]

    approved = (await mod.gql(DECIDE, id=req_yes, approve=True))["decideJoinRequest"]
    assert approved["status"] == "APPROVED" and approved["decidedBy"] == {"id": mod.id}
    assert approved["decidedAt"] is not None and approved["user"] == {"id": yes.id}
    rejected = (await host.gql(DECIDE, id=req_no, approve=False))["decideJoinRequest"]
    assert rejected["status"] == "REJECTED" and rejected["decidedBy"] == {"id": host.id}

    assert await members(host, room["id"]) == {host.id: "HOST", mod.id: "MODERATOR",
                                               yes.id: "MEMBER"}
    assert await room_of(no, room["id"]) is None
    assert (await room_of(yes, room["id"]) or {})["id"] == room["id"]
    # Deciding again, either way, conflicts; nothing changes.
    for request_id in (req_yes, req_no):
        for approve in (True, False):
            assert await host.error(DECIDE, id=request_id, approve=approve) == "CONFLICT"
    assert (await room_of(host, room["id"]) or {})["joinRequests"] == []
    assert len(await members(host, room["id"])) == 3


async def test_only_managers_decide(people: People) -> None:
    host, _, room = await moderated_room(people)
    member, asker = people.make_user("doctor"), people.make_user("doctor")
    await register(member)
    await host.gql(INVITE, room=room["id"], users=[member.id])
    request_id = (await asker.gql(JOIN, id=room["id"]))["joinRoom"]["request"]["id"]
    for who in (member, asker, people.make_user("doctor")):
        assert await who.error(DECIDE, id=request_id, approve=True) == "NOT_FOUND"
    assert await host.error(DECIDE, id="no-such-request", approve=True) == "NOT_FOUND"


# --- leaving and hand-over ------------------------------------------------------------------


async def test_last_host_hands_over_to_a_moderator(people: People) -> None:
    host, early, mod = (people.make_user("doctor") for _ in range(3))
    room = await make_room(host, visibility="PUBLIC")
    await early.gql(JOIN, id=room["id"])
    await mod.gql(JOIN, id=room["id"])
    await host.gql(SET_ROLE, room=room["id"], user=mod.id, role="MODERATOR")

    await host.gql(LEAVE, id=room["id"])
    after = await room_of(early, room["id"])
    assert after is not None and after["host"] == {"id": mod.id}
    assert await members(early, room["id"]) == {early.id: "MEMBER", mod.id: "HOST"}


async def test_last_host_hands_over_to_longest_standing_eligible_member(people: People
                                                                          ) -> None:
    """The heir could have opened the room: not a patient, not a student (in a case
    discussion), however long they have been there."""
    host, patient = people.make_user("doctor"), people.make_user("patient")
    first, second, third = (people.make_user("student"), people.make_user("teacher"),
                            people.make_user("doctor"))
    await register(patient)
    room = await make_room(host, visibility="PUBLIC", invite=[patient])  # patient is earliest
    for who in (first, second, third):
        await who.gql(JOIN, id=room["id"])

    await host.gql(LEAVE, id=room["id"])
    after = await room_of(second, room["id"])
    assert after is not None and after["host"] == {"id": second.id}
    roles = await members(second, room["id"])
    assert roles == {patient.id: "MEMBER", first.id: "MEMBER", second.id: "HOST",
                     third.id: "MEMBER"}


async def test_leave_when_not_a_member(people: People) -> None:
    host, doc = people.make_user("doctor"), people.make_user("doctor")
    public = await make_room(host, visibility="PUBLIC")
    private = await make_room(host, visibility="PRIVATE")
    assert await doc.error(LEAVE, id=public["id"]) == "CONFLICT"
    assert await doc.error(LEAVE, id=private["id"]) == "NOT_FOUND"


async def test_a_second_host_keeps_the_room(people: People) -> None:
    host, cohost = people.make_user("doctor"), people.make_user("doctor")
    await register(cohost)
    room = await make_room(host, invite=[cohost])
    await host.gql(SET_ROLE, room=room["id"], user=cohost.id, role="HOST")
    await host.gql(LEAVE, id=room["id"])
    after = await room_of(cohost, room["id"])
    assert after is not None and after["host"] == {"id": cohost.id}


# --- invitations and removal ----------------------------------------------------------------


async def test_invite(people: People) -> None:
    host, guest, member = (people.make_user("doctor") for _ in range(3))
    await register(guest, member)
    room = await make_room(host, invite=[member], maxParticipants=3)
    invited = (await host.gql(INVITE, room=room["id"], users=[guest.id]))["inviteToRoom"]
    assert invited["participantCount"] == 3
    assert (await room_of(guest, room["id"]) or {})["id"] == room["id"]
    assert await members(host, room["id"]) == {host.id: "HOST", member.id: "MEMBER",
                                               guest.id: "MEMBER"}
    # An invitee who leaves may come straight back.
    await guest.gql(LEAVE, id=room["id"])
    assert (await guest.gql(JOIN, id=room["id"]))["joinRoom"]["status"] == "JOINED"

    extra = people.make_user("doctor")
    await register(extra)
    assert await member.error(INVITE, room=room["id"], users=[extra.id]) == "FORBIDDEN"
    assert await host.error(INVITE, room=room["id"], users=[extra.id]) == "CONFLICT"
    await bad_input(host, INVITE, "userIds", room=room["id"], users=["nobody"])
    await bad_input(host, INVITE, "userIds", room=room["id"], users=[])


async def test_removal_revokes_the_invitation(people: People) -> None:
    host, _, room = await moderated_room(people)
    guest = people.make_user("doctor")
    await register(guest)
    await host.gql(INVITE, room=room["id"], users=[guest.id])

    await host.gql(REMOVE, room=room["id"], user=guest.id)
    assert guest.id not in await members(host, room["id"])
    assert await room_of(guest, room["id"]) is None
    rejoin = (await guest.gql(JOIN, id=room["id"]))["joinRoom"]
    assert rejoin["status"] == "PENDING"
    assert guest.id not in await members(host, room["id"])


async def test_who_may_remove_whom(people: People) -> None:
    host, mod, room = await moderated_room(people)
    a, b = people.make_user("doctor"), people.make_user("doctor")
    await register(a, b)
    await host.gql(INVITE, room=room["id"], users=[a.id, b.id])
    assert await a.error(REMOVE, room=room["id"], user=b.id) == "FORBIDDEN"
    assert await mod.error(REMOVE, room=room["id"], user=host.id) == "FORBIDDEN"
    assert await host.error(REMOVE, room=room["id"], user="nobody") == "NOT_FOUND"
    await mod.gql(REMOVE, room=room["id"], user=a.id)
    await host.gql(REMOVE, room=room["id"], user=mod.id)
    assert set(await members(host, room["id"])) == {host.id, b.id}


# --- capacity under concurrency -------------------------------------------------------------


def outcome(body: dict[str, Any]) -> str:
    if body.get("errors"):
        codes = {e["extensions"]["code"] for e in body["errors"]}
        assert len(codes) == 1, body
        return codes.pop()
    return str(body["data"]["joinRoom"]["status"])


async def test_30_concurrent_joins_fill_exactly_to_max(people: People) -> None:
    host = people.make_user("doctor")
    room = await make_room(host, visibility="PUBLIC", maxParticipants=20)
    crowd = [people.make_user("student") for _ in range(30)]
    await register(*crowd)
    bodies = await asyncio.gather(*(p.post(JOIN, {"id": room["id"]}) for p in crowd))
    assert Counter(outcome(b) for b in bodies) == {"JOINED": 19, "CONFLICT": 11}
    after = await room_of(host, room["id"])
    assert after is not None and after["participantCount"] == 20
    joined = {p.id for p, b in zip(crowd, bodies, strict=True) if outcome(b) == "JOINED"}
    assert set(await members(host, room["id"])) == joined | {host.id}


async def test_concurrent_approvals_respect_max(people: People) -> None:
    host, mod, room = await moderated_room(people, maxParticipants=5)
    askers = [people.make_user("doctor") for _ in range(8)]
    requests = [(await p.gql(JOIN, id=room["id"]))["joinRoom"]["request"]["id"] for p in askers]
    deciders = [host if i % 2 else mod for i in range(len(requests))]
    bodies = await asyncio.gather(*(d.post(DECIDE, {"id": r, "approve": True})
                                    for d, r in zip(deciders, requests, strict=True)))
    codes = Counter("APPROVED" if not b.get("errors") else b["errors"][0]["extensions"]["code"]
                    for b in bodies)
    assert codes == {"APPROVED": 3, "CONFLICT": 5}
    after = await room_of(host, room["id"])
    assert after is not None and after["participantCount"] == 5
    # The requests that did not fit are still pending, for when someone leaves.
    assert len(after["joinRequests"]) == 5


async def test_concurrent_invites_and_joins_respect_max(people: People) -> None:
    host, mod, room = await moderated_room(people, visibility="PUBLIC", maxParticipants=6)
    guests = [people.make_user("doctor") for _ in range(6)]
    walkers = [people.make_user("student") for _ in range(6)]
    await register(*guests, *walkers)
    invites = [(host if i % 2 else mod).post(INVITE, {"room": room["id"], "users": [g.id]})
               for i, g in enumerate(guests)]
    pair = mod.post(INVITE, {"room": room["id"], "users": [walkers[0].id, walkers[1].id]})
    joins = [w.post(JOIN, {"id": room["id"]}) for w in walkers[2:]]
    bodies = await asyncio.gather(*invites, pair, *joins)
    for body in bodies:
        if body.get("errors"):
            assert body["errors"][0]["extensions"]["code"] == "CONFLICT", body
    after = await room_of(host, room["id"])
    assert after is not None and after["participantCount"] == 6
    assert len(after["participants"]) == 6


async def test_an_invitation_withdraws_a_pending_request(people: People) -> None:
    host, _, room = await moderated_room(people)
    doc = people.make_user("doctor")
    request = (await doc.gql(JOIN, id=room["id"]))["joinRoom"]["request"]
    await host.gql(INVITE, room=room["id"], users=[doc.id])
    assert (await room_of(host, room["id"]) or {})["joinRequests"] == []
    assert doc.id in await members(host, room["id"])
    decided = await host.post(DECIDE, {"id": request["id"], "approve": True})
    assert decided["errors"][0]["extensions"]["code"] == "CONFLICT"

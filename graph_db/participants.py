"""MEMBER_OF edges: who is in a room, in which role; capacity-checked joins and hand-over.

One user's edge to one room is found with both ends bound first, by their ids, then the edge
between them (`MEMBERSHIP`): ArcadeDB expands a pattern from its first node, so starting
from the room walked every member (14 ms in a room of 2,000; a send, an access check and a
subscribe each did it), and starting from the user walked every room they were ever in
(15-20 ms for someone in 10,000); bound at both ends, ~1 ms either way. Never with an end
that may be null: ArcadeDB then matches the pattern as if that end were unbound (measured:
a missing room matched all of the user's memberships)."""

from __future__ import annotations

import enum
from typing import Any, TypeVar

from graph_db.batch import by_key, params_of, unique
from graph_db.driver import GraphDB, Tx
from graph_db.events import EventRecord, EventType, append_event
from graph_db.models import ParticipantRecord, ParticipantRole, now_ms

_FIELDS = "{roomId: r.id, userId: u.id, role: m.role, joinedAt: m.joinedAt}"
# r, u and the edge between them (named `edge`); no row when either end or the edge is missing.
MEMBERSHIP = """
MATCH (r:Room {{id: {room}}})
MATCH (u:User {{id: {user}}})
WITH r, u
MATCH (r)<-[{edge}:MEMBER_OF]-(u)
"""
EDGE = MEMBERSHIP.format(room="$roomId", user="$userId", edge="m")
# The same per `key` = [room id, user id] of an UNWIND, for batched reads: r is null for a
# missing room (`room_where` may exclude more), the edge null for a non-member; no row for a
# missing user.
KEYED_MEMBERSHIP = """
OPTIONAL MATCH (r:Room {{id: key[0]}}){room_where}
MATCH (u:User {{id: key[1]}})
WITH key, r, u
OPTIONAL MATCH (r)<-[{edge}:MEMBER_OF]-(u)
"""

BY_ROOMS = f"""
UNWIND $ids AS id
OPTIONAL MATCH (r:Room {{id: id}})<-[m:MEMBER_OF]-(u:User)
WITH id, m, u, r ORDER BY m.joinedAt, u.id
RETURN id, collect(CASE WHEN m IS NULL THEN NULL ELSE {_FIELDS} END) AS ps
"""

COUNTS = """
UNWIND $ids AS id
OPTIONAL MATCH (r:Room {id: id})
RETURN collect([id, CASE WHEN r IS NULL THEN 0
                         ELSE COUNT { (r)<-[:MEMBER_OF]-(:User) } END]) AS rows
"""

BY_KEYS = f"""
UNWIND $keys AS key
{KEYED_MEMBERSHIP.format(room_where="", edge="m")}
RETURN key, CASE WHEN m IS NULL THEN NULL ELSE {_FIELDS} END AS p
"""

# Bumping lockVersion first serializes every membership change of one room: Neo4j takes the
# node's write lock there, ArcadeDB's optimistic check makes the losers retry. The count
# read after it is therefore exact, so maxParticipants holds under concurrent joins.
LOCK = """
MATCH (r:Room {id: $roomId}) WHERE r.deletedAt IS NULL
SET r.lockVersion = coalesce(r.lockVersion, 0) + 1
RETURN r.maxParticipants AS max, COUNT { (r)<-[:MEMBER_OF]-(:User) } AS n
"""

ADD = f"""
MATCH (u:User {{id: $userId}}), (r:Room {{id: $roomId}})
MERGE (r)<-[m:MEMBER_OF]-(u)
ON CREATE SET m.role = $role, m.joinedAt = $now, m.lastReadSeq = coalesce(r.seq, 0)
RETURN {_FIELDS} AS p
"""

CANCEL_PENDING = """
MATCH (j:JoinRequest {roomId: $roomId, userId: $userId, status: 'PENDING'})
SET j.status = 'CANCELLED', j.decidedAt = $now
"""

INVITE = """
MATCH (u:User {id: $userId}), (r:Room {id: $roomId})
MERGE (r)<-[i:INVITED_TO]-(u) ON CREATE SET i.at = $now
"""

REMOVE = f"""
{EDGE}
OPTIONAL MATCH (r)<-[i:INVITED_TO]-(u)
WITH m, i, m.role AS role
DELETE m
FOREACH (x IN CASE WHEN $revoke AND i IS NOT NULL THEN [i] ELSE [] END | DELETE x)
RETURN role
"""

SET_ROLE = f"""
{EDGE}
SET m.role = $role
RETURN {_FIELDS} AS p
"""

HOSTS_AND_HEIR = """
MATCH (r:Room {id: $roomId})
OPTIONAL MATCH (r)<-[m:MEMBER_OF]-(u:User)
WITH r, u, m ORDER BY CASE m.role WHEN 'MODERATOR' THEN 0 ELSE 1 END, m.joinedAt, u.id
WITH r, collect(CASE WHEN m IS NULL THEN NULL
                     ELSE {id: u.id, role: m.role, eligible: u.role IN $hostRoles} END) AS ms
RETURN r.hostId AS hostId, [x IN ms WHERE x.role = 'HOST' | x.id] AS hosts,
       [x IN ms WHERE x.role <> 'HOST' AND x.eligible | x.id][0] AS heir
"""

SET_HOST = f"""
{EDGE}
SET m.role = 'HOST', r.hostId = $userId
"""

SET_HOST_ID = """
MATCH (r:Room {id: $roomId}) SET r.hostId = $userId
"""


T = TypeVar("T")
# What a write returns, with the events it appended (publish them after the commit).
Written = tuple[T, list[EventRecord]]


class JoinOutcome(enum.Enum):
    JOINED = "joined"
    ALREADY = "already"
    FULL = "full"
    GONE = "gone"


def _member(row: dict[str, Any]) -> ParticipantRecord | None:
    return ParticipantRecord.from_row(row["p"]) if row["p"] else None


async def participants_by_rooms(db: GraphDB, ids: list[str]) -> list[list[ParticipantRecord]]:
    rows = await db.read_rows(BY_ROOMS, ids=unique(ids))
    return by_key(ids, rows, lambda r: [ParticipantRecord.from_row(p) for p in r["ps"] if p],
                  [], field="id")


async def counts_by_rooms(db: GraphDB, ids: list[str]) -> list[int]:
    rows = await db.read_table(COUNTS, ("id", "n"), ids=unique(ids))
    return by_key(ids, rows, lambda r: int(r["n"]), 0, field="id")


async def memberships(db: GraphDB, keys: list[tuple[str, str]]) -> list[ParticipantRecord | None]:
    """Per (room id, user id): the membership, or None."""
    rows = await db.read_rows(BY_KEYS, keys=params_of(keys))
    return by_key(keys, rows, _member, None)


async def lock_room(tx: Tx, room_id: str) -> tuple[int, int] | None:
    """Serializes membership changes of a room; returns (maxParticipants, count)."""
    row = await tx.one(LOCK, roomId=room_id)
    return (int(row["max"]), int(row["n"])) if row else None


async def add_locked(tx: Tx, room_id: str, user_id: str, role: ParticipantRole,
                     *, invited: bool = False) -> ParticipantRecord:
    """Adds a member inside a transaction that already holds the room lock; a request of
    theirs still waiting is withdrawn (they are in by other means)."""
    row = await tx.one(ADD, roomId=room_id, userId=user_id, role=role.value, now=now_ms())
    await tx.rows(CANCEL_PENDING, roomId=room_id, userId=user_id, now=now_ms())
    if invited:
        await tx.rows(INVITE, roomId=room_id, userId=user_id, now=now_ms())
    assert row is not None
    return ParticipantRecord.from_row(row["p"])


async def join(db: GraphDB, room_id: str, user_id: str) -> Written[JoinOutcome]:
    async def work(tx: Tx) -> Written[JoinOutcome]:
        locked = await lock_room(tx, room_id)
        if locked is None:
            return JoinOutcome.GONE, []
        existing = await tx.one(BY_KEYS, keys=[[room_id, user_id]])
        if existing and _member(existing):
            return JoinOutcome.ALREADY, []
        max_participants, count = locked
        if count >= max_participants:
            return JoinOutcome.FULL, []
        await add_locked(tx, room_id, user_id, ParticipantRole.MEMBER)
        joined = await append_event(tx, room_id, EventType.PARTICIPANT_JOINED, user_id=user_id)
        return JoinOutcome.JOINED, [joined]

    return await db.write(work, serialize_on=room_id)


async def leave(db: GraphDB, room_id: str, user_id: str, *, revoke_invite: bool,
                host_roles: list[str]) -> Written[bool]:
    """Removes a member; when the last host goes, the room passes to a moderator or the
    longest-standing member. False when the user was not a member."""

    async def work(tx: Tx) -> Written[bool]:
        if await lock_room(tx, room_id) is None:
            return False, []
        removed = await tx.one(REMOVE, roomId=room_id, userId=user_id, revoke=revoke_invite)
        if removed is None:
            return False, []
        events = [await append_event(tx, room_id, EventType.PARTICIPANT_LEFT, user_id=user_id)]
        if removed["role"] == ParticipantRole.HOST.value:
            events += await _hand_over(tx, room_id, host_roles)
        return True, events

    return await db.write(work, serialize_on=room_id)


async def _hand_over(tx: Tx, room_id: str, host_roles: list[str]) -> list[EventRecord]:
    # Room.host must always name a current host while anyone is left in the room.
    row = await tx.one(HOSTS_AND_HEIR, roomId=room_id, hostRoles=host_roles)
    if row is None:
        return []
    if row["hosts"]:
        if row["hostId"] not in row["hosts"]:
            await tx.rows(SET_HOST_ID, roomId=room_id, userId=row["hosts"][0])
            return [await append_event(tx, room_id, EventType.ROOM_UPDATED)]
    elif row["heir"]:
        await tx.rows(SET_HOST, roomId=room_id, userId=row["heir"])
        return [await append_event(tx, room_id, EventType.PARTICIPANT_ROLE_CHANGED,
                                   user_id=row["heir"]),
                await append_event(tx, room_id, EventType.ROOM_UPDATED)]
    return []


async def set_role(db: GraphDB, room_id: str, user_id: str, role: ParticipantRole,
                   host_roles: list[str]) -> Written[ParticipantRecord | None]:
    async def work(tx: Tx) -> Written[ParticipantRecord | None]:
        if await lock_room(tx, room_id) is None:
            return None, []
        row = await tx.one(SET_ROLE, roomId=room_id, userId=user_id, role=role.value)
        if row is None:
            return None, []
        events = [await append_event(tx, room_id, EventType.PARTICIPANT_ROLE_CHANGED,
                                     user_id=user_id)]
        if role is not ParticipantRole.HOST:
            events += await _hand_over(tx, room_id, host_roles)
        return ParticipantRecord.from_row(row["p"]), events

    return await db.write(work, serialize_on=room_id)


async def invite(db: GraphDB, room_id: str, user_ids: list[str]) -> Written[JoinOutcome]:
    """Adds invitees as members (all or none) and remembers the invitation, so an invitee
    who leaves may come back; FULL when they would not all fit."""

    async def work(tx: Tx) -> Written[JoinOutcome]:
        locked = await lock_room(tx, room_id)
        if locked is None:
            return JoinOutcome.GONE, []
        keys = [(room_id, uid) for uid in user_ids]
        rows = await tx.rows(BY_KEYS, keys=params_of(keys))
        current = by_key(keys, rows, _member, None)
        new_ids = [uid for uid, member in zip(user_ids, current, strict=True) if member is None]
        if locked[1] + len(new_ids) > locked[0]:
            return JoinOutcome.FULL, []
        events = []
        for uid in user_ids:
            await add_locked(tx, room_id, uid, ParticipantRole.MEMBER, invited=True)
            if uid in new_ids:
                events.append(await append_event(tx, room_id, EventType.PARTICIPANT_JOINED,
                                                 user_id=uid))
        return JoinOutcome.JOINED, events

    return await db.write(work, serialize_on=room_id)

"""Room nodes: created with their host, listed with the caller's visibility, soft-deleted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graph_db.batch import by_key, params_of, unique
from graph_db.driver import GraphDB, Tx
from graph_db.events import EventType, append_event
from graph_db.models import (
    ParticipantRecord,
    ParticipantRole,
    RoomRecord,
    RoomType,
    RoomVisibility,
    now_ms,
)
from graph_db.participants import KEYED_MEMBERSHIP, Written, lock_room

CREATE = """
MATCH (host:User {id: $hostId})
CREATE (r:Room {id: $id, name: $name, description: $description, type: $type,
                visibility: $visibility, maxParticipants: $maxParticipants, hostId: $hostId,
                createdAt: $now, updatedAt: $now, lockVersion: 0})
CREATE (host)-[:MEMBER_OF {role: $hostRole, joinedAt: $now}]->(r)
WITH r
UNWIND $inviteIds AS inviteId
MATCH (u:User {id: inviteId})
CREATE (u)-[:MEMBER_OF {role: $memberRole, joinedAt: $now}]->(r)
CREATE (u)-[:INVITED_TO {at: $now}]->(r)
RETURN count(u) AS invited
"""

BY_IDS = """
UNWIND $ids AS id
OPTIONAL MATCH (r:Room {id: id}) WHERE r.deletedAt IS NULL
RETURN collect([id, r {.*}]) AS rows
"""

# One visibility rule for listing and counting; the resolver layer applies the same rule
# to single rooms (resolvers/policy.py).
VISIBLE = """
MATCH (r:Room)
WHERE r.deletedAt IS NULL
  AND ($type IS NULL OR r.type = $type)
  AND ($visibility IS NULL OR r.visibility = $visibility)
  AND ($search IS NULL OR toLower(r.name) CONTAINS $search)
WITH r, EXISTS { (r)<-[:MEMBER_OF]-(:User {id: $viewer}) } AS member
WHERE (NOT $mine OR member)
  AND ($admin OR member OR (r.visibility = 'PUBLIC' AND NOT $patient)
       OR EXISTS { (r)<-[:INVITED_TO]-(:User {id: $viewer}) }
       OR (NOT $patient AND EXISTS { (:JoinRequest {roomId: r.id, userId: $viewer,
                                                    status: 'PENDING'}) }))
"""

# "My rooms" from the viewer's own edges (a member sees the room): scanning every room and
# checking membership in each cost the rooms page ~7 ms of database time per request.
MINE = """
MATCH (:User {id: $viewer})-[:MEMBER_OF]->(r:Room)
WHERE r.deletedAt IS NULL
  AND ($type IS NULL OR r.type = $type)
  AND ($visibility IS NULL OR r.visibility = $visibility)
  AND ($search IS NULL OR toLower(r.name) CONTAINS $search)
"""


def visible(filt: RoomFilterArgs) -> str:
    """The MATCH of the rooms a filter lets its viewer see."""
    return MINE if filt.mine else VISIBLE


COUNT = "RETURN count(r) AS n"

UPDATE = """
MATCH (r:Room {id: $id}) WHERE r.deletedAt IS NULL
SET r += $changes, r.updatedAt = $now
RETURN r {.*} AS r
"""

SOFT_DELETE = """
MATCH (r:Room {id: $id}) WHERE r.deletedAt IS NULL
SET r.deletedAt = $now, r.deletedBy = $by
RETURN r.id AS id
"""


@dataclass(frozen=True, slots=True)
class RoomFilterArgs:
    viewer_id: str
    admin: bool
    patient: bool
    type: RoomType | None = None
    visibility: RoomVisibility | None = None
    mine: bool = False
    search: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "viewer": self.viewer_id, "admin": self.admin, "patient": self.patient,
            "type": self.type.value if self.type else None,
            "visibility": self.visibility.value if self.visibility else None,
            "mine": self.mine, "search": self.search.lower() if self.search else None,
        }


async def create_room(db: GraphDB, *, room_id: str, host_id: str, name: str,
                      description: str | None, type: RoomType, visibility: RoomVisibility,
                      max_participants: int, invite_ids: list[str]) -> None:
    params = {
        "id": room_id, "hostId": host_id, "name": name, "description": description,
        "type": type.value, "visibility": visibility.value, "maxParticipants": max_participants,
        "now": now_ms(), "inviteIds": invite_ids, "hostRole": ParticipantRole.HOST.value,
        "memberRole": ParticipantRole.MEMBER.value,
    }

    async def work(tx: Tx) -> None:
        await tx.rows(CREATE, **params)

    await db.write(work)


async def rooms_by_ids(db: GraphDB, ids: list[str]) -> list[RoomRecord | None]:
    rows = await db.read_table(BY_IDS, ("key", "r"), ids=unique(ids))
    return by_key(ids, rows, lambda r: RoomRecord.from_row(r["r"]) if r["r"] else None, None)


async def count_rooms(db: GraphDB, filt: RoomFilterArgs) -> int:
    rows = await db.read_rows(visible(filt) + COUNT, **filt.params())
    return int(rows[0]["n"]) if rows else 0


async def update_room(db: GraphDB, room_id: str,
                      changes: dict[str, Any]) -> Written[RoomRecord | int | None]:
    """The updated room; None when gone; the participant count when a new
    maxParticipants would be below it."""

    async def work(tx: Tx) -> Written[RoomRecord | int | None]:
        locked = await lock_room(tx, room_id)
        if locked is None:
            return None, []
        if changes.get("maxParticipants", locked[1]) < locked[1]:
            return locked[1], []
        row = await tx.one(UPDATE, id=room_id, changes=changes, now=now_ms())
        if row is None:
            return None, []
        event = await append_event(tx, room_id, EventType.ROOM_UPDATED)
        return RoomRecord.from_row(row["r"]), [event]

    return await db.write(work, serialize_on=room_id)


async def soft_delete_room(db: GraphDB, room_id: str, by: str) -> Written[bool]:
    async def work(tx: Tx) -> Written[bool]:
        if await lock_room(tx, room_id) is None:
            return False, []
        await tx.rows(SOFT_DELETE, id=room_id, now=now_ms(), by=by)
        return True, [await append_event(tx, room_id, EventType.ROOM_CLOSED, user_id=by)]

    return await db.write(work, serialize_on=room_id)


STANDING = "UNWIND $keys AS key" + KEYED_MEMBERSHIP.format(
    room_where=" WHERE r.deletedAt IS NULL", edge="m") + """
RETURN collect([key, r {.*},
       CASE WHEN m IS NULL THEN NULL
            ELSE {roomId: r.id, userId: u.id, role: m.role, joinedAt: m.joinedAt} END,
       r IS NOT NULL AND EXISTS { (r)<-[:INVITED_TO]-(u) },
       r IS NOT NULL AND EXISTS { (:JoinRequest {roomId: key[0], userId: key[1],
                                                  status: 'PENDING'}) }]) AS rows
"""


@dataclass(frozen=True, slots=True)
class Standing:
    """A room and one user's standing in it, read together (one query for an access check)."""

    room: RoomRecord
    member: ParticipantRecord | None
    invited: bool
    pending: bool


def _standing(row: dict[str, Any]) -> Standing | None:
    if not row["r"]:
        return None
    return Standing(room=RoomRecord.from_row(row["r"]),
                    member=ParticipantRecord.from_row(row["p"]) if row["p"] else None,
                    invited=bool(row["invited"]), pending=bool(row["pending"]))


async def standings(db: GraphDB, keys: list[tuple[str, str]]) -> list[Standing | None]:
    """Per (room id, user id): the room and that user's standing in it (access checks)."""
    rows = await db.read_table(STANDING, ("key", "r", "p", "invited", "pending"),
                               keys=params_of(keys))
    return by_key(keys, rows, _standing, None)

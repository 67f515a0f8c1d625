"""JoinRequest nodes: a request to enter a PRIVATE room, decided by its hosts and moderators."""

from __future__ import annotations

import enum

from graph_db.batch import by_key, unique
from graph_db.driver import GraphDB, Tx
from graph_db.events import EventType, append_event
from graph_db.models import JoinRequestRecord, JoinRequestStatus, ParticipantRole, now_ms
from graph_db.participants import Written, add_locked, lock_room

_FIELDS = "j {.*} AS j"

PENDING_OF = f"""
MATCH (j:JoinRequest {{roomId: $roomId, userId: $userId, status: 'PENDING'}})
RETURN {_FIELDS}
"""

CREATE = f"""
MATCH (u:User {{id: $userId}}), (r:Room {{id: $roomId}})
CREATE (j:JoinRequest {{id: $id, roomId: $roomId, userId: $userId, status: 'PENDING',
                        message: $message, createdAt: $now}})
CREATE (u)-[:REQUESTED]->(j)-[:TO_JOIN]->(r)
RETURN {_FIELDS}
"""

BY_IDS = """
UNWIND $ids AS id
OPTIONAL MATCH (j:JoinRequest {id: id})
RETURN id AS key, CASE WHEN j IS NULL THEN NULL ELSE j {.*} END AS j
"""

BY_ROOM = f"""
MATCH (j:JoinRequest {{roomId: $roomId}})
WHERE $status IS NULL OR j.status = $status
RETURN {_FIELDS}
ORDER BY j.createdAt, j.id
"""

DECIDE = f"""
MATCH (j:JoinRequest {{id: $id, status: 'PENDING'}})
SET j.status = $status, j.decidedById = $by, j.decidedAt = $now
RETURN {_FIELDS}
"""


class DecideOutcome(enum.Enum):
    DONE = "done"
    NOT_PENDING = "not_pending"
    FULL = "full"


async def request_to_join(db: GraphDB, *, request_id: str, room_id: str, user_id: str,
                          message: str | None) -> Written[JoinRequestRecord]:
    """Creates a pending request, or returns the one already pending (idempotent)."""

    async def work(tx: Tx) -> Written[JoinRequestRecord]:
        # The room lock also serializes two racing requests of one user.
        await lock_room(tx, room_id)
        row = await tx.one(PENDING_OF, roomId=room_id, userId=user_id)
        events = []
        if row is None:
            row = await tx.one(CREATE, id=request_id, roomId=room_id, userId=user_id,
                               message=message, now=now_ms())
            events.append(await append_event(tx, room_id, EventType.JOIN_REQUESTED,
                                             request_id=request_id, user_id=user_id))
        assert row is not None
        return JoinRequestRecord.from_row(row["j"]), events

    return await db.write(work, serialize_on=room_id)


async def requests_by_ids(db: GraphDB, ids: list[str]) -> list[JoinRequestRecord | None]:
    rows = await db.read_rows(BY_IDS, ids=unique(ids))
    return by_key(ids, rows, lambda r: JoinRequestRecord.from_row(r["j"]) if r["j"] else None,
                  None)


async def requests_of_room(db: GraphDB, room_id: str,
                           status: JoinRequestStatus | None) -> list[JoinRequestRecord]:
    rows = await db.read_rows(BY_ROOM, roomId=room_id, status=status.value if status else None)
    return [JoinRequestRecord.from_row(r["j"]) for r in rows]


async def decide(db: GraphDB, request: JoinRequestRecord, *, approve: bool, decided_by: str
                 ) -> Written[tuple[DecideOutcome, JoinRequestRecord | None]]:
    status = JoinRequestStatus.APPROVED if approve else JoinRequestStatus.REJECTED

    async def work(tx: Tx) -> Written[tuple[DecideOutcome, JoinRequestRecord | None]]:
        locked = await lock_room(tx, request.room_id)
        if approve and locked is not None and locked[1] >= locked[0]:
            return (DecideOutcome.FULL, None), []
        row = await tx.one(DECIDE, id=request.id, status=status.value, by=decided_by,
                           now=now_ms())
        if row is None:
            return (DecideOutcome.NOT_PENDING, None), []
        events = []
        if approve:
            await add_locked(tx, request.room_id, request.user_id, ParticipantRole.MEMBER)
            events.append(await append_event(tx, request.room_id, EventType.PARTICIPANT_JOINED,
                                             user_id=request.user_id))
        return (DecideOutcome.DONE, JoinRequestRecord.from_row(row["j"])), events

    return await db.write(work, serialize_on=request.room_id)

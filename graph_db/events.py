"""The durable room event log: one strictly increasing `seq` per room, assigned in the same
transaction as the change it records, so storage order is the order every subscriber sees."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from graph_db.driver import GraphDB, Tx
from graph_db.models import _at, now_ms


class EventType(enum.Enum):
    MESSAGE_POSTED = "MessagePosted"
    MESSAGE_EDITED = "MessageEdited"
    MESSAGE_DELETED = "MessageDeleted"
    REACTIONS_CHANGED = "ReactionsChanged"
    PARTICIPANT_JOINED = "ParticipantJoined"
    PARTICIPANT_LEFT = "ParticipantLeft"
    PARTICIPANT_ROLE_CHANGED = "ParticipantRoleChanged"
    JOIN_REQUESTED = "JoinRequested"
    ROOM_UPDATED = "RoomUpdated"
    ROOM_CLOSED = "RoomClosed"
    # Durable when a reply finishes (its final state, read back by id); ephemeral (seq 0, the
    # snapshot carried along) while it streams.
    ASSISTANT_REPLY_UPDATED = "AssistantReplyUpdated"
    # Ephemeral: published, never stored, no seq of their own.
    TYPING_CHANGED = "TypingChanged"
    PRESENCE_CHANGED = "PresenceChanged"
    CALL_PARTICIPANT_JOINED = "CallParticipantJoined"
    CALL_PARTICIPANT_LEFT = "CallParticipantLeft"
    MEDIA_STATE_CHANGED = "MediaStateChanged"
    SCREEN_SHARE_CHANGED = "ScreenShareChanged"
    RECORDING_CONSENT_REQUESTED = "RecordingConsentRequested"
    RECORDING_STATE_CHANGED = "RecordingStateChanged"
    FILE_SHARED = "FileShared"


@dataclass(frozen=True, slots=True)
class EventRecord:
    room_id: str
    seq: int
    type: EventType
    at_ms: int
    message_id: str | None = None
    user_id: str | None = None
    request_id: str | None = None

    @property
    def at(self) -> datetime:
        return _at(self.at_ms)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EventRecord:
        return cls(room_id=row["roomId"], seq=row["seq"], type=EventType(row["type"]),
                   at_ms=row["at"], message_id=row.get("messageId"),
                   user_id=row.get("userId"), request_id=row.get("requestId"))


# Bumping the room's counter takes the room's write lock (Neo4j) or makes concurrent writers
# conflict and retry (ArcadeDB): no two events of one room ever get the same seq.
NEXT_SEQ = """
MATCH (r:Room {id: $roomId})
SET r.seq = coalesce(r.seq, 0) + 1, r.lockVersion = coalesce(r.lockVersion, 0) + 1
RETURN r.seq AS seq
"""

APPEND = """
CREATE (e:Event {roomId: $roomId, seq: $seq, type: $type, at: $at, messageId: $messageId,
                 userId: $userId, requestId: $requestId})
"""

# The same append as a clause of a larger statement, saving round trips on hot writes (a
# message and its event in one statement). Needs the room bound as `r`; binds `seq`.
APPEND_CLAUSE = """
SET r.seq = coalesce(r.seq, 0) + 1, r.lockVersion = coalesce(r.lockVersion, 0) + 1
WITH *, r.seq AS seq
CREATE (:Event {roomId: r.id, seq: seq, type: $eventType, at: $eventAt,
                messageId: $eventMessageId, userId: $eventUserId, requestId: null})
"""

AFTER = """
MATCH (e:Event {roomId: $roomId})
WHERE e.seq > $after AND ($upTo IS NULL OR e.seq <= $upTo)
RETURN e {.*} AS e
ORDER BY e.seq
LIMIT $limit
"""

HEAD = """
MATCH (r:Room {id: $roomId})
RETURN coalesce(r.seq, 0) AS seq, coalesce(r.prunedSeq, 0) AS pruned,
       r.deletedAt IS NOT NULL AS closed
"""

PRUNE = """
MATCH (e:Event {roomId: $roomId}) WHERE e.seq <= $upTo
DETACH DELETE e
WITH count(*) AS n
MATCH (r:Room {id: $roomId}) SET r.prunedSeq = $upTo
RETURN n
"""


@dataclass(frozen=True, slots=True)
class StreamHead:
    seq: int
    pruned: int
    closed: bool


async def append_event(tx: Tx, room_id: str, type: EventType, *, message_id: str | None = None,
                       user_id: str | None = None, request_id: str | None = None,
                       at_ms: int | None = None) -> EventRecord:
    """Records an event inside the caller's write transaction and returns it with its seq."""
    row = await tx.one(NEXT_SEQ, roomId=room_id)
    assert row is not None, "events are appended to existing rooms only"
    event = EventRecord(room_id=room_id, seq=int(row["seq"]), type=type,
                        at_ms=at_ms if at_ms is not None else now_ms(),
                        message_id=message_id, user_id=user_id, request_id=request_id)
    await tx.rows(APPEND, roomId=room_id, seq=event.seq, type=type.value, at=event.at_ms,
                  messageId=message_id, userId=user_id, requestId=request_id)
    return event


def clause_params(type: EventType, at_ms: int, *, message_id: str | None,
                  user_id: str | None) -> dict[str, Any]:
    return {"eventType": type.value, "eventAt": at_ms, "eventMessageId": message_id,
            "eventUserId": user_id}


async def events_after(db: GraphDB, room_id: str, after: int, *, up_to: int | None = None,
                       limit: int = 500) -> list[EventRecord]:
    rows = await db.read_rows(AFTER, roomId=room_id, after=after, upTo=up_to, limit=limit)
    return [EventRecord.from_row(r["e"]) for r in rows]


async def stream_head(db: GraphDB, room_id: str) -> StreamHead | None:
    rows = await db.read_rows(HEAD, roomId=room_id)
    if not rows:
        return None
    row = rows[0]
    return StreamHead(seq=int(row["seq"]), pruned=int(row["pruned"]), closed=bool(row["closed"]))


async def prune_events(db: GraphDB, room_id: str, up_to: int) -> None:
    """Forgets events up to `up_to`; cursors older than that must resync."""
    await db.write(lambda tx: tx.rows(PRUNE, roomId=room_id, upTo=up_to), serialize_on=room_id)

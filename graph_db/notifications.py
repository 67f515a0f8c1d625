"""In-app notifications: (:Notification) nodes, one per (event, recipient, kind).

Exactly once: each carries a `key` naming what caused it, the recipient and the kind, unique
by constraint, and is created with MERGE on it: the same event processed twice (a retry,
two instances) finds the node the first made and creates nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from graph_db.driver import GraphDB, Tx
from graph_db.models import _at, now_ms


@dataclass(frozen=True, slots=True)
class NewNotification:
    id: str
    key: str
    user_id: str
    kind: str
    title: str
    body: str | None
    room_id: str | None
    actor_id: str | None
    ref_id: str | None  # the message, request, file or assistant reply it is about
    # When its cause happened (a room event's time): notifications worked out concurrently
    # off the request path still list in the order of their causes. None: when written.
    at_ms: int | None = None

    def row(self, now: int) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "userId": self.user_id, "kind": self.kind,
                "title": self.title, "body": self.body, "roomId": self.room_id,
                "actorId": self.actor_id, "refId": self.ref_id,
                "createdAt": self.at_ms if self.at_ms is not None else now}


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationRecord(NewNotification):
    """A stored one: when it was made and read."""

    created_ms: int
    read_ms: int | None

    @property
    def created_at(self) -> datetime:
        return _at(self.created_ms)

    @property
    def read_at(self) -> datetime | None:
        return _at(self.read_ms) if self.read_ms is not None else None

    @classmethod
    def from_row(cls, n: dict[str, Any]) -> NotificationRecord:
        return cls(id=n["id"], key=n["key"], user_id=n["userId"], kind=n["kind"],
                   title=n["title"], body=n.get("body"), room_id=n.get("roomId"),
                   actor_id=n.get("actorId"), ref_id=n.get("refId"),
                   created_ms=n["createdAt"], read_ms=n.get("readAt"))


# `created` is true only where this statement made the node: only those are announced.
CREATE = """
UNWIND $rows AS row
MERGE (n:Notification {key: row.key})
ON CREATE SET n.id = row.id, n.userId = row.userId, n.kind = row.kind, n.title = row.title,
              n.body = row.body, n.roomId = row.roomId, n.actorId = row.actorId,
              n.refId = row.refId, n.createdAt = row.createdAt, n.readAt = null
RETURN n {.*} AS n, n.id = row.id AS created
"""

PAGE = """
MATCH (n:Notification {userId: $userId})
WHERE (NOT $unreadOnly OR n.readAt IS NULL)
  AND ($afterAt IS NULL OR n.createdAt < $afterAt
       OR (n.createdAt = $afterAt AND n.id < $afterId))
RETURN n {.*} AS n
ORDER BY n.createdAt DESC, n.id DESC
LIMIT $limit
"""

UNREAD = """
MATCH (n:Notification {userId: $userId})
WHERE n.readAt IS NULL
RETURN count(n) AS unread
"""

MARK_READ = """
MATCH (n:Notification {userId: $userId})
WHERE n.readAt IS NULL AND ($ids IS NULL OR n.id IN $ids)
SET n.readAt = $now
RETURN count(n) AS marked
"""

# Who a room event concerns: its hosts and moderators, or all its participants.
MANAGERS = """
MATCH (u:User)-[m:MEMBER_OF]->(:Room {id: $roomId})
WHERE m.role IN ['HOST', 'MODERATOR']
RETURN collect(u.id) AS ids
"""

PARTICIPANTS = """
MATCH (u:User)-[:MEMBER_OF]->(:Room {id: $roomId})
RETURN collect(u.id) AS ids
"""

# A reply concerns the author of the message replied to and everyone who wrote in the thread,
# as long as they are still in the room.
# The thread's writers before the reply (`$seq`): read later, when the notifications are
# worked out off the request path, the thread may have grown (a later writer is not told of
# an earlier reply).
THREAD = """
MATCH (r:Room {id: $roomId})
OPTIONAL MATCH (m:Message {rootId: $rootId}) WHERE m.seq < $seq
WITH r, collect(DISTINCT m.authorId) + $authors AS ids
UNWIND ids AS id
MATCH (u:User {id: id})-[:MEMBER_OF]->(r)
RETURN collect(DISTINCT u.id) AS ids
"""


APPROVED = """
MATCH (j:JoinRequest {roomId: $roomId, userId: $userId, status: 'APPROVED'})
RETURN count(j) AS n
"""

AUTHORS = """
UNWIND $ids AS id
MATCH (m:Message {id: id})
RETURN collect(m.authorId) AS authors
"""


async def approved_request(db: GraphDB, room_id: str, user_id: str) -> bool:
    """The user's request to join this room was approved (their addition was no invitation)."""
    rows = await db.read_rows(APPROVED, roomId=room_id, userId=user_id)
    return bool(rows and rows[0]["n"])


async def authors(db: GraphDB, message_ids: list[str]) -> list[str]:
    rows = await db.read_rows(AUTHORS, ids=message_ids)
    return [str(a) for a in rows[0]["authors"]] if rows else []


# A user's notification level in a room (MEMBER_OF.notify: ALL, MENTIONS, MUTED).
LEVELS = """
UNWIND $userIds AS uid
MATCH (u:User {id: uid}), (r:Room {id: $roomId})
WITH u, r
MATCH (u)-[m:MEMBER_OF]->(r)
RETURN u.id AS userId, coalesce(m.notify, 'ALL') AS level
"""


async def levels(db: GraphDB, room_id: str, user_ids: list[str]) -> dict[str, str]:
    rows = await db.read_rows(LEVELS, roomId=room_id, userIds=user_ids)
    return {str(r["userId"]): str(r["level"]) for r in rows}


async def create(db: GraphDB, items: list[NewNotification]) -> list[NotificationRecord]:
    """The notifications this call created (those that existed already are left out)."""
    if not items:
        return []
    now = now_ms()

    async def work(tx: Tx) -> list[NotificationRecord]:
        rows = await tx.rows(CREATE, rows=[item.row(now) for item in items])
        return [NotificationRecord.from_row(r["n"]) for r in rows if r["created"]]

    return await db.write(work)


async def page(db: GraphDB, user_id: str, *, unread_only: bool,
               after: tuple[int, str] | None, limit: int) -> list[NotificationRecord]:
    rows = await db.read_rows(PAGE, userId=user_id, unreadOnly=unread_only,
                              afterAt=after[0] if after else None,
                              afterId=after[1] if after else None, limit=limit)
    return [NotificationRecord.from_row(r["n"]) for r in rows]


async def unread_count(db: GraphDB, user_id: str) -> int:
    rows = await db.read_rows(UNREAD, userId=user_id)
    return int(rows[0]["unread"]) if rows else 0


async def mark_read(db: GraphDB, user_id: str, ids: list[str] | None) -> int:
    rows = await db.write_rows(MARK_READ, userId=user_id, ids=ids, now=now_ms())
    return int(rows[0]["marked"]) if rows else 0


async def recipients(db: GraphDB, query: str, **params: Any) -> list[str]:
    rows = await db.read_rows(query, **params)
    return [str(i) for i in rows[0]["ids"]] if rows else []

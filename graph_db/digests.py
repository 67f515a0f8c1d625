"""Email digests: which notifications are due, the outbox, and notification preferences.

A digest is a (:Digest) node (the outbox): created with the notifications it covers claimed
(`n.digestId`), so two instances never put one notification in two digests; sent by whoever
claims it (status PENDING → SENDING, a stale SENDING claimable again after a crash); SENT,
DROPPED (nothing left to say at send time) or FAILED (refused for good)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graph_db.driver import GraphDB, Tx
from graph_db.models import now_ms

# Email preference: ALL (every kind but room updates, which stay in-app), MENTIONS (mentions
# and what is addressed to the user alone), OFF.
EMAIL_KINDS = {
    "ALL": ["JOIN_REQUEST", "JOIN_DECISION", "INVITATION", "MENTION", "REPLY", "ASSISTANT",
            "FILE_SCANNED"],
    "MENTIONS": ["MENTION", "REPLY", "INVITATION", "JOIN_DECISION"],
    "OFF": [],
}
DEFAULT_EMAIL = "MENTIONS"


@dataclass(frozen=True, slots=True)
class Due:
    user_id: str
    email: str
    ids: list[str]


@dataclass(frozen=True, slots=True)
class Outgoing:
    id: str
    user_id: str
    email: str | None
    counts: dict[str, int]  # what is still unread and wanted, re-checked at claim time
    ids: list[str]
    attempts: int


# Users with unread, unclaimed notifications their preferences want by email, the oldest
# older than the delay, no digest in the last interval, not in do-not-disturb, and no live
# connection since the oldest of them arrived.
DUE = """
MATCH (n:Notification)
WHERE n.readAt IS NULL AND n.digestId IS NULL AND n.createdAt <= $before
MATCH (u:User {id: n.userId})
WHERE u.email IS NOT NULL
  AND n.kind IN CASE coalesce(u.emailPref, $defaultPref)
                  WHEN 'ALL' THEN $all WHEN 'MENTIONS' THEN $mentions ELSE [] END
  AND (u.dndUntil IS NULL OR u.dndUntil < $now)
  AND (u.lastDigestAt IS NULL OR u.lastDigestAt <= $lastBefore)
  AND (u.lastSeenAt IS NULL OR u.lastSeenAt < n.createdAt)
OPTIONAL MATCH (u)-[m:MEMBER_OF]->(:Room {id: n.roomId})
WITH u, n, coalesce(m.notify, 'ALL') AS level
WHERE level = 'ALL' OR (level = 'MENTIONS' AND n.kind = 'MENTION')
RETURN u.id AS userId, u.email AS email, collect(n.id) AS ids
LIMIT $limit
"""

ENQUEUE = """
MATCH (u:User {id: $userId})
CREATE (d:Digest {id: $id, userId: $userId, status: 'PENDING', createdAt: $now, attempts: 0,
                  nextAt: $now})
WITH d
UNWIND $ids AS nid
MATCH (n:Notification {id: nid})
WHERE n.digestId IS NULL
SET n.digestId = $id
RETURN count(n) AS claimed
"""

CLAIM = """
MATCH (d:Digest)
WHERE (d.status = 'PENDING' AND d.nextAt <= $now)
   OR (d.status = 'SENDING' AND d.claimedAt < $staleBefore)
WITH d ORDER BY d.createdAt LIMIT $limit
SET d.status = 'SENDING', d.claimedAt = $now, d.claimedBy = $by
RETURN d.id AS id, d.userId AS userId, d.attempts AS attempts
"""

# At send time: what is still unread (read, deleted or muted items are dropped).
CONTENT = """
MATCH (u:User {id: $userId})
MATCH (n:Notification {digestId: $id})
WHERE n.readAt IS NULL
OPTIONAL MATCH (u)-[m:MEMBER_OF]->(:Room {id: n.roomId})
WITH u, n, coalesce(m.notify, 'ALL') AS level
WHERE level = 'ALL' OR (level = 'MENTIONS' AND n.kind = 'MENTION')
RETURN u.email AS email, n.kind AS kind, n.id AS id, n.refId AS refId
"""

DELETED = """
UNWIND $ids AS id
MATCH (m:Message {id: id})
WHERE m.deleted = true
RETURN collect(m.id) AS ids
"""

FINISH = """
MATCH (d:Digest {id: $id, claimedBy: $by})
SET d.status = $status, d.finishedAt = $now
WITH d
OPTIONAL MATCH (u:User {id: d.userId})
FOREACH (_ IN CASE WHEN $status = 'SENT' AND u IS NOT NULL THEN [1] ELSE [] END |
         SET u.lastDigestAt = $now)
RETURN d.id AS id
"""

RETRY = """
MATCH (d:Digest {id: $id, claimedBy: $by})
SET d.status = 'PENDING', d.attempts = d.attempts + 1, d.nextAt = $nextAt
RETURN d.id AS id
"""

SEEN = """
MATCH (u:User {id: $userId})
SET u.lastSeenAt = $now
"""

SETTINGS = """
MATCH (u:User {id: $userId})
OPTIONAL MATCH (u)-[m:MEMBER_OF]->(r:Room)
WHERE m.notify IS NOT NULL AND m.notify <> 'ALL'
RETURN coalesce(u.emailPref, $defaultPref) AS email, u.dndUntil AS dndUntil,
       collect([r.id, m.notify]) AS rooms
"""

SET_EMAIL = """
MATCH (u:User {id: $userId})
SET u.emailPref = coalesce($email, coalesce(u.emailPref, $defaultPref)),
    u.dndUntil = CASE WHEN $clearDnd THEN null ELSE coalesce($dndUntil, u.dndUntil) END
"""

SET_ROOM = """
MATCH (u:User {id: $userId}), (r:Room {id: $roomId})
WITH u, r
MATCH (u)-[m:MEMBER_OF]->(r)
SET m.notify = $level
RETURN r.id AS id
"""


def _kinds() -> dict[str, Any]:
    return {"all": EMAIL_KINDS["ALL"], "mentions": EMAIL_KINDS["MENTIONS"],
            "defaultPref": DEFAULT_EMAIL}


async def due(db: GraphDB, *, delay_ms: int, interval_ms: int, limit: int = 100) -> list[Due]:
    now = now_ms()
    rows = await db.read_rows(DUE, before=now - delay_ms, now=now,
                              lastBefore=now - interval_ms, limit=limit, **_kinds())
    return [Due(r["userId"], r["email"], [str(i) for i in r["ids"]]) for r in rows if r["ids"]]


async def enqueue(db: GraphDB, digest_id: str, item: Due) -> int:
    async def work(tx: Tx) -> int:
        row = await tx.one(ENQUEUE, id=digest_id, userId=item.user_id, ids=item.ids,
                           now=now_ms())
        return int(row["claimed"]) if row else 0

    return await db.write(work)


async def claim(db: GraphDB, by: str, *, stale_ms: int, limit: int = 20) -> list[Outgoing]:
    now = now_ms()
    rows = await db.write_rows(CLAIM, now=now, staleBefore=now - stale_ms, by=by, limit=limit)
    claimed = []
    for row in rows:
        content = await _still_wanted(db, await db.read_rows(CONTENT, id=row["id"],
                                                              userId=row["userId"]))
        counts: dict[str, int] = {}
        for c in content:
            counts[c["kind"]] = counts.get(c["kind"], 0) + 1
        email = content[0]["email"] if content else None
        claimed.append(Outgoing(row["id"], row["userId"], email, counts,
                                [str(c["id"]) for c in content], int(row["attempts"] or 0)))
    return claimed


async def _still_wanted(db: GraphDB, content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without the items whose message was deleted meanwhile."""
    refs = [str(c["refId"]) for c in content if c.get("refId")]
    if not refs:
        return content
    rows = await db.read_rows(DELETED, ids=refs)
    gone = set(rows[0]["ids"]) if rows else set()
    return [c for c in content if c.get("refId") not in gone]


async def finish(db: GraphDB, digest_id: str, by: str, status: str) -> None:
    await db.write_rows(FINISH, id=digest_id, by=by, status=status, now=now_ms())


async def retry(db: GraphDB, digest_id: str, by: str, next_at_ms: int) -> None:
    await db.write_rows(RETRY, id=digest_id, by=by, nextAt=next_at_ms)


async def seen(db: GraphDB, user_id: str) -> None:
    await db.write_rows(SEEN, userId=user_id, now=now_ms())


async def settings_of(db: GraphDB, user_id: str) -> tuple[str, int | None, dict[str, str]]:
    rows = await db.read_rows(SETTINGS, userId=user_id, defaultPref=DEFAULT_EMAIL)
    if not rows:
        return DEFAULT_EMAIL, None, {}
    rooms = {str(r[0]): str(r[1]) for r in rows[0]["rooms"] if r[0] is not None}
    return str(rows[0]["email"]), rows[0]["dndUntil"], rooms


async def update_settings(db: GraphDB, user_id: str, *, email: str | None,
                          dnd_until: int | None, clear_dnd: bool,
                          rooms: dict[str, str]) -> bool:
    """False, and nothing written, when the user is not in one of `rooms`."""
    async def work(tx: Tx) -> bool:
        await tx.rows(SET_EMAIL, userId=user_id, email=email, dndUntil=dnd_until,
                      clearDnd=clear_dnd, defaultPref=DEFAULT_EMAIL)
        for room_id, level in rooms.items():
            if not await tx.one(SET_ROOM, userId=user_id, roomId=room_id, level=level):
                raise _NotIn  # rolls the whole change back
        return True

    try:
        return await db.write(work)
    except _NotIn:
        return False


class _NotIn(Exception):
    """A room of the settings the user is not in."""

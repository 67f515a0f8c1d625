"""The assistant's replies: (:AssistantReply) nodes of a room, created STREAMING when asked and
finished once, in the same transaction as their durable AssistantReplyUpdated event.

A reply holds what the room was shown (the prompt as asked, the answer with placeholders
restored), never what was sent upstream. Its room is a property: a deleted room's replies go
with its other content (soft-deleted rooms are never read)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from graph_db.driver import GraphDB, Tx
from graph_db.events import EventRecord, EventType, append_event
from graph_db.models import _at, now_ms

STREAMING, COMPLETE, BLOCKED, CANCELLED, FAILED = (
    "STREAMING", "COMPLETE", "BLOCKED", "CANCELLED", "FAILED")


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    id: str
    room_id: str
    asked_by: str
    prompt: str
    text: str
    status: str
    model: str
    created_ms: int
    finished_ms: int | None = None
    finish_reason: str | None = None
    truncated: bool = False
    citations: tuple[str, ...] = ()
    tokens_in: int | None = None
    tokens_out: int | None = None
    error_code: str | None = None

    @property
    def done(self) -> bool:
        return self.status != STREAMING

    @property
    def created_at(self) -> datetime:
        return _at(self.created_ms)

    @property
    def finished_at(self) -> datetime | None:
        return _at(self.finished_ms) if self.finished_ms is not None else None

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> ReplyRecord:
        return cls(id=r["id"], room_id=r["roomId"], asked_by=r["askedBy"], prompt=r["prompt"],
                   text=r.get("text") or "", status=r["status"], model=r["model"],
                   created_ms=int(r["createdAt"]), finished_ms=r.get("finishedAt"),
                   finish_reason=r.get("finishReason"), truncated=bool(r.get("truncated")),
                   citations=tuple(r.get("citations") or ()), tokens_in=r.get("tokensIn"),
                   tokens_out=r.get("tokensOut"), error_code=r.get("errorCode"))

    def data(self) -> dict[str, Any]:
        """What an ephemeral update carries (every instance renders the same snapshot)."""
        return {"id": self.id, "roomId": self.room_id, "askedBy": self.asked_by,
                "prompt": self.prompt, "text": self.text, "status": self.status,
                "model": self.model, "createdAt": self.created_ms}


@dataclass(frozen=True, slots=True)
class Ending:
    """How a reply finished."""

    status: str
    text: str
    finish_reason: str | None = None
    truncated: bool = False
    citations: tuple[str, ...] = ()
    tokens_in: int | None = None
    tokens_out: int | None = None
    error_code: str | None = None


_FIELDS = "a {.*} AS a"

CREATE = f"""
MATCH (r:Room {{id: $roomId}}) WHERE r.deletedAt IS NULL
CREATE (a:AssistantReply {{id: $id, roomId: $roomId, askedBy: $askedBy, prompt: $prompt,
                           text: '', status: 'STREAMING', model: $model, createdAt: $now}})
RETURN {_FIELDS}
"""

FINISH = f"""
MATCH (a:AssistantReply {{id: $id}}) WHERE a.status = 'STREAMING'
SET a.status = $status, a.text = $text, a.finishReason = $finishReason,
    a.truncated = $truncated, a.citations = $citations, a.tokensIn = $tokensIn,
    a.tokensOut = $tokensOut, a.errorCode = $errorCode, a.finishedAt = $now
RETURN {_FIELDS}
"""

BY_IDS = f"""
UNWIND $ids AS id
MATCH (a:AssistantReply {{id: id}})
RETURN {_FIELDS}
"""

# The newest of a room, newest first (the caller reverses); finished ones only when asked.
RECENT = f"""
MATCH (a:AssistantReply {{roomId: $roomId}})
WHERE ($since IS NULL OR a.createdAt >= $since) AND ($done = false OR a.status <> 'STREAMING')
WITH a ORDER BY a.createdAt DESC, a.id DESC LIMIT $limit
RETURN {_FIELDS}
"""

# Left STREAMING by an instance that died (its deadline long past): closed by a sweep.
STALE = f"""
MATCH (a:AssistantReply) WHERE a.status = 'STREAMING' AND a.createdAt < $before
RETURN {_FIELDS}
LIMIT 100
"""


async def create(db: GraphDB, *, reply_id: str, room_id: str, asked_by: str, prompt: str,
                 model: str) -> ReplyRecord | None:
    """None when the room went away meanwhile."""
    rows = await db.write_rows(CREATE, id=reply_id, roomId=room_id, askedBy=asked_by,
                               prompt=prompt, model=model, now=now_ms())
    return ReplyRecord.from_row(rows[0]["a"]) if rows else None


async def finish(db: GraphDB, reply_id: str, room_id: str,
                 ending: Ending) -> tuple[ReplyRecord | None, list[EventRecord]]:
    """Finishes a STREAMING reply and appends its durable event, once: a second finish (a
    cancellation racing the end) changes nothing and returns None."""

    async def work(tx: Tx) -> tuple[ReplyRecord | None, list[EventRecord]]:
        row = await tx.one(FINISH, id=reply_id, status=ending.status, text=ending.text,
                           finishReason=ending.finish_reason, truncated=ending.truncated,
                           citations=list(ending.citations), tokensIn=ending.tokens_in,
                           tokensOut=ending.tokens_out, errorCode=ending.error_code,
                           now=now_ms())
        if row is None:
            return None, []
        record = ReplyRecord.from_row(row["a"])
        if await _room_open(tx, room_id):
            event = await append_event(tx, room_id, EventType.ASSISTANT_REPLY_UPDATED,
                                       request_id=reply_id, user_id=record.asked_by)
            return record, [event]
        return record, []

    return await db.write(work, serialize_on=room_id)


ROOM_OPEN = "MATCH (r:Room {id: $id}) RETURN r.deletedAt IS NULL AS open"


async def _room_open(tx: Tx, room_id: str) -> bool:
    row = await tx.one(ROOM_OPEN, id=room_id)
    return bool(row and row["open"])


async def replies_by_ids(db: GraphDB, ids: list[str]) -> list[ReplyRecord | None]:
    rows = await db.read_rows(BY_IDS, ids=ids)
    found = {r["a"]["id"]: ReplyRecord.from_row(r["a"]) for r in rows}
    return [found.get(i) for i in ids]


async def recent(db: GraphDB, room_id: str, *, limit: int, since_ms: int | None = None,
                 done_only: bool = False) -> list[ReplyRecord]:
    """The room's newest replies, oldest first."""
    rows = await db.read_rows(RECENT, roomId=room_id, since=since_ms, done=done_only,
                              limit=limit)
    return [ReplyRecord.from_row(r["a"]) for r in reversed(rows)]


async def stale(db: GraphDB, before_ms: int) -> list[ReplyRecord]:
    rows = await db.read_rows(STALE, before=before_ms)
    return [ReplyRecord.from_row(r["a"]) for r in rows]

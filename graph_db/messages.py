"""Message nodes: posted, edited and soft-deleted in a room, threaded, reacted to, and read.

(:User)-[:POSTED]->(:Message)-[:IN]->(:Room), (:Message)-[:REPLY_TO]->(:Message thread root),
(:User)-[:REACTED {emoji, at}]->(:Message). Every change appends its room event in the same
transaction, so a message's `seq` is the seq of its MessagePosted event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from neo4j.exceptions import ConstraintError

from graph_db.batch import by_key, params_of, unique
from graph_db.driver import GraphDB, Tx
from graph_db.events import APPEND_CLAUSE, EventRecord, EventType, append_event, clause_params
from graph_db.models import _at, from_ms, now_ms
from graph_db.participants import KEYED_MEMBERSHIP, MEMBERSHIP

# A deleted message keeps its content in storage (moderation, audit) but it never leaves the
# database: the projection blanks everything a reader could recover it from.
FIELDS = """{id: m.id, roomId: m.roomId, authorId: m.authorId, createdAt: m.createdAt,
  editedAt: m.editedAt, deleted: m.deleted, seq: m.seq, parentId: m.parentId, rootId: m.rootId,
  content: CASE WHEN m.deleted THEN '' ELSE m.content END,
  mentionIds: CASE WHEN m.deleted THEN [] ELSE m.mentionIds END,
  editContents: CASE WHEN m.deleted THEN [] ELSE m.editContents END,
  editTimes: CASE WHEN m.deleted THEN [] ELSE m.editTimes END}"""

BY_IDS = f"""
UNWIND $ids AS id
OPTIONAL MATCH (m:Message {{id: id}})
RETURN collect([id, CASE WHEN m IS NULL THEN NULL ELSE {FIELDS} END]) AS rows
"""

AUTHOR_IN_ROOM = MEMBERSHIP.format(room="$roomId", user="$authorId", edge="")

BY_ID = f"MATCH (m:Message {{id: $id}}) RETURN {FIELDS} AS m"

BY_CLIENT_KEY = f"MATCH (m:Message {{clientKey: $key}}) RETURN {FIELDS} AS m"

# A resend is answered only to a participant, like the send itself.
RESENT = f"""
{AUTHOR_IN_ROOM}
MATCH (m:Message {{clientKey: $key}})
RETURN {FIELDS} AS m
"""

# Mentions name users who are participants at send time; anyone else is dropped here, in the
# same transaction that checks membership.
_MENTIONED = "[x IN $mentionIds WHERE EXISTS { (r)<-[:MEMBER_OF]-(:User {id: x}) }]"

# Posting checks membership itself (no separate read on the hot path): no row, no message.
CREATE = AUTHOR_IN_ROOM + """
WITH r, u WHERE r.deletedAt IS NULL
""" + APPEND_CLAUSE + f"""
CREATE (m:Message {{id: $id, roomId: $roomId, authorId: $authorId, content: $content,
                    createdAt: $now, deleted: false, seq: seq, parentId: $parentId,
                    rootId: $rootId, clientKey: $clientKey, mentionIds: {_MENTIONED},
                    editContents: [], editTimes: []}})
CREATE (u)-[:POSTED]->(m)-[:IN]->(r)
RETURN seq, {FIELDS} AS m
"""

LINK_ROOT = """
MATCH (m:Message {id: $id}), (root:Message {id: $rootId})
CREATE (m)-[:REPLY_TO]->(root)
"""

# Each edit keeps the version it replaces with the time that version was written.
EDIT = f"""
MATCH (m:Message {{id: $id}})-[:IN]->(r:Room)
WHERE NOT m.deleted AND m.content <> $content
SET m.editContents = coalesce(m.editContents, []) + [m.content],
    m.editTimes = coalesce(m.editTimes, []) + [coalesce(m.editedAt, m.createdAt)],
    m.content = $content, m.editedAt = $now, m.mentionIds = {_MENTIONED}
RETURN {FIELDS} AS m
"""

SOFT_DELETE = f"""
MATCH (m:Message {{id: $id}}) WHERE NOT m.deleted
SET m.deleted = true, m.deletedAt = $now, m.deletedBy = $userId
RETURN {FIELDS} AS m
"""

ADD_REACTION = f"""
MATCH (u:User {{id: $userId}}), (m:Message {{id: $id}}) WHERE NOT m.deleted
OPTIONAL MATCH (u)-[x:REACTED {{emoji: $emoji}}]->(m)
WITH u, m, x WHERE x IS NULL
CREATE (u)-[:REACTED {{emoji: $emoji, at: $now}}]->(m)
RETURN {FIELDS} AS m
"""

REMOVE_REACTION = f"""
MATCH (:User {{id: $userId}})-[x:REACTED {{emoji: $emoji}}]->(m:Message {{id: $id}})
WHERE NOT m.deleted
DELETE x
RETURN {FIELDS} AS m
"""

REACTIONS = """
UNWIND $ids AS id
MATCH (m:Message {id: id})
RETURN collect([id, [(m)<-[x:REACTED]-(u:User) | [u.id, x.emoji, x.at]]]) AS rows
"""

# Deleted replies still count: the thread keeps them (shown as deleted).
REPLY_COUNTS = """
UNWIND $ids AS id
RETURN collect([id, COUNT { (m:Message {rootId: id}) }]) AS rows
"""

# Pages of several threads at once (a message list asking for each message's replies): a
# row variable cannot be a LIMIT, so each thread is collected in order, then sliced.
REPLIES_PAGES = f"""
UNWIND $keys AS key
OPTIONAL MATCH (m:Message {{rootId: key[0]}})
WHERE key[1] IS NULL OR m.seq > key[1]
WITH key, m ORDER BY m.seq
WITH key, collect(CASE WHEN m IS NULL THEN NULL ELSE {FIELDS} END) AS ms
RETURN key, ms[0..key[2]] AS ms
"""

# The read mark only moves forward and never past what the room has produced.
MARK_READ = MEMBERSHIP.format(room="$roomId", user="$userId", edge="mem") + """
WITH mem, CASE WHEN $upTo < coalesce(r.seq, 0) THEN $upTo ELSE coalesce(r.seq, 0) END AS target
SET mem.lastReadSeq = CASE WHEN coalesce(mem.lastReadSeq, 0) > target
                           THEN mem.lastReadSeq ELSE target END
RETURN mem.lastReadSeq AS seq
"""

UNREAD = "UNWIND $keys AS key" + KEYED_MEMBERSHIP.format(room_where="", edge="mem") + """
RETURN key, CASE WHEN mem IS NULL THEN 0 ELSE COUNT {
  MATCH (m:Message {roomId: key[0]})
  WHERE m.seq > coalesce(mem.lastReadSeq, 0) AND NOT m.deleted AND m.authorId <> key[1]
} END AS n
"""


@dataclass(frozen=True, slots=True)
class MessageEditRecord:
    """A replaced version of a message and when that version was written."""

    content: str
    edited_at: datetime


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: str
    room_id: str
    author_id: str
    content: str
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    seq: int
    parent_id: str | None
    root_id: str | None
    mention_ids: tuple[str, ...]
    edits: tuple[MessageEditRecord, ...]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MessageRecord:
        deleted = bool(row["deleted"])
        edits = zip(row.get("editContents") or [], row.get("editTimes") or [], strict=True)
        return cls(
            id=row["id"], room_id=row["roomId"], author_id=row["authorId"],
            content="" if deleted else row["content"], created_at=_at(row["createdAt"]),
            edited_at=from_ms(row.get("editedAt")), deleted=deleted, seq=int(row["seq"]),
            parent_id=row.get("parentId"), root_id=row.get("rootId"),
            mention_ids=() if deleted else tuple(row.get("mentionIds") or ()),
            edits=() if deleted else tuple(MessageEditRecord(c, _at(t)) for c, t in edits),
        )


@dataclass(frozen=True, slots=True)
class ReactionRecord:
    user_id: str
    emoji: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class NewMessage:
    id: str
    room_id: str
    author_id: str
    content: str
    parent_id: str | None
    root_id: str | None
    client_message_id: str | None
    mention_ids: list[str]


@dataclass(frozen=True, slots=True)
class Sent:
    """The message, and its MessagePosted event unless it already existed (idempotent)."""

    message: MessageRecord
    event: EventRecord | None


class Outcome(enum.Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"  # nothing to do (same content, reaction already there or gone)
    DELETED = "deleted"  # the message is deleted: it no longer changes
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Change:
    outcome: Outcome
    message: MessageRecord | None
    event: EventRecord | None = None


def client_key(room_id: str, author_id: str, client_message_id: str | None,
               message_id: str) -> str:
    """roomId|authorId|clientMessageId, escaped so that ids containing `|` cannot make two
    senders' keys collide; "id:<message id>" when the client sent no id (the uniqueness
    constraint needs a value on every message)."""
    if client_message_id is None:
        return f"id:{message_id}"
    parts = (room_id, author_id, client_message_id)
    return "|".join(p.replace("\\", "\\\\").replace("|", "\\|") for p in parts)


def _create_params(new: NewMessage, key: str) -> dict[str, Any]:
    now = now_ms()
    return {"id": new.id, "roomId": new.room_id, "authorId": new.author_id,
            "content": new.content, "now": now, "parentId": new.parent_id,
            "rootId": new.root_id, "clientKey": key, "mentionIds": new.mention_ids,
            **clause_params(EventType.MESSAGE_POSTED, now, message_id=new.id,
                            user_id=new.author_id)}


def _posted(new: NewMessage, params: dict[str, Any],
            rows: list[dict[str, Any]]) -> Sent | None:
    """The message and its event from CREATE's row; None when nothing was created (the
    author is not a participant any more, or the room is gone)."""
    created = _message(rows[0] if rows else None)
    if created is None:
        return None
    event = EventRecord(room_id=new.room_id, seq=int(rows[0]["seq"]),
                        type=EventType.MESSAGE_POSTED, at_ms=params["now"], message_id=new.id,
                        user_id=new.author_id)
    return Sent(created, event)


def _message(row: dict[str, Any] | None) -> MessageRecord | None:
    return MessageRecord.from_row(row["m"]) if row and row["m"] else None


async def send_message(db: GraphDB, new: NewMessage) -> Sent | None:
    """Posts a message once per client key: a resend returns the original and appends no
    event, also when the resend races the original in another process. None when the author
    is not a participant of the room."""
    key = client_key(new.room_id, new.author_id, new.client_message_id, new.id)
    try:
        # An explicit transaction even for a plain post: ArcadeDB commits each CREATE of an
        # auto-commit statement on its own (with its own retries), so under a write conflict
        # with another process the event could be stored twice for one message
        # (tests/test_concurrent_writers.py).
        return await db.write(lambda tx: send_in(tx, new), serialize_on=new.room_id)
    except ConstraintError:
        # Another process committed the same client key first; the in-process lock cannot
        # see it. Its message is the answer, and our event was rolled back with our write.
        winner = _message(await db.read(lambda tx: tx.one(BY_CLIENT_KEY, key=key)))
        if winner is None:
            raise
        return Sent(winner, None)


async def send_in(tx: Tx, new: NewMessage) -> Sent | None:
    """One send's statements, in a transaction that may hold others (graph_db/group_commit.py)."""
    key = client_key(new.room_id, new.author_id, new.client_message_id, new.id)
    if new.client_message_id is not None:  # an "id:" key is new by construction
        existing = _message(await tx.one(RESENT, key=key, roomId=new.room_id,
                                         authorId=new.author_id))
        if existing is not None:
            return Sent(existing, None)
    params = _create_params(new, key)
    sent = _posted(new, params, await tx.rows(CREATE, **params))
    if sent is not None and new.root_id is not None:
        await tx.rows(LINK_ROOT, id=new.id, rootId=new.root_id)
    return sent


async def _change(db: GraphDB, room_id: str, message_id: str, event_type: EventType,
                  query: str, **params: Any) -> Change:
    """Runs one conditional change; when it matched, appends the event in the same
    transaction, otherwise says why nothing changed."""
    now = now_ms()

    async def work(tx: Tx) -> Change:
        changed = _message(await tx.one(query, id=message_id, now=now, **params))
        if changed is None:
            current = _message(await tx.one(BY_ID, id=message_id))
            if current is None:
                return Change(Outcome.MISSING, None)
            return Change(Outcome.DELETED if current.deleted else Outcome.UNCHANGED, current)
        event = await append_event(tx, room_id, event_type, message_id=message_id,
                                   user_id=params.get("userId"), at_ms=now)
        return Change(Outcome.CHANGED, changed, event)

    return await db.write(work, serialize_on=room_id)


async def edit_message(db: GraphDB, message: MessageRecord, content: str,
                       mention_ids: list[str]) -> Change:
    """New content (UNCHANGED when identical); the replaced version joins the history and
    mentions are resolved again against the current participants."""
    return await _change(db, message.room_id, message.id, EventType.MESSAGE_EDITED, EDIT,
                         content=content, mentionIds=mention_ids, userId=message.author_id)


async def delete_message(db: GraphDB, message: MessageRecord, by: str) -> Change:
    """Soft delete: the node, its thread and reactions stay; DELETED when it already was."""
    return await _change(db, message.room_id, message.id, EventType.MESSAGE_DELETED,
                         SOFT_DELETE, userId=by)


async def add_reaction(db: GraphDB, message: MessageRecord, user_id: str, emoji: str) -> Change:
    return await _change(db, message.room_id, message.id, EventType.REACTIONS_CHANGED,
                         ADD_REACTION, userId=user_id, emoji=emoji)


async def remove_reaction(db: GraphDB, message: MessageRecord, user_id: str,
                          emoji: str) -> Change:
    return await _change(db, message.room_id, message.id, EventType.REACTIONS_CHANGED,
                         REMOVE_REACTION, userId=user_id, emoji=emoji)


async def messages_by_ids(db: GraphDB, ids: list[str]) -> list[MessageRecord | None]:
    rows = await db.read_table(BY_IDS, ("key", "m"), ids=unique(ids))
    return by_key(ids, rows, _message, None)


async def reactions_by_messages(db: GraphDB, ids: list[str]) -> list[list[ReactionRecord]]:
    rows = await db.read_table(REACTIONS, ("id", "rs"), ids=unique(ids))
    return by_key(ids, rows, lambda r: reaction_records(r["rs"]), [], field="id")


def reaction_records(found: list[list[Any]]) -> list[ReactionRecord]:
    """[user id, emoji, at] triples as records, oldest first (ties by user id)."""
    return sorted((ReactionRecord(u, e, int(at)) for u, e, at in found),
                  key=lambda r: (r.at_ms, r.user_id))


async def reply_counts(db: GraphDB, root_ids: list[str]) -> list[int]:
    rows = await db.read_table(REPLY_COUNTS, ("id", "n"), ids=unique(root_ids))
    return by_key(root_ids, rows, lambda r: int(r["n"]), 0, field="id")


async def replies_pages(db: GraphDB, keys: list[tuple[str, int | None, int]]
                        ) -> list[list[MessageRecord]]:
    """For each (root id, after seq, limit): up to `limit` replies after `after`, oldest
    first."""
    rows = await db.read_rows(REPLIES_PAGES, keys=params_of(keys))
    return by_key(keys, rows, lambda r: [MessageRecord.from_row(m) for m in r["ms"] if m], [])


async def mark_read(db: GraphDB, room_id: str, user_id: str, up_to_seq: int) -> int | None:
    """The member's read mark after moving it to `up_to_seq` (clamped to the room's seq,
    never backwards); None when the user is not a member."""

    async def work(tx: Tx) -> int | None:
        row = await tx.one(MARK_READ, roomId=room_id, userId=user_id, upTo=up_to_seq)
        return int(row["seq"]) if row else None

    return await db.write(work, serialize_on=room_id)


async def unread_counts(db: GraphDB, keys: list[tuple[str, str]]) -> list[int]:
    """Per (room id, user id): messages and replies after the user's read mark, not deleted
    and not their own; 0 for non-members."""
    rows = await db.read_rows(UNREAD, keys=params_of(keys))
    return by_key(keys, rows, lambda r: int(r["n"]), 0)

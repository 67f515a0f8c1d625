"""Pages that carry what their lists show, in one statement and one record each.

The rooms page brings each room's host and participant count, a room's message page each
message's author, reactions and reply count: a client's first screen asks for these, and as
separate batched reads they were one round trip each (the message page took 5 statements,
the rooms page 4). The resolvers prime the operation's loaders with them, so the fields read
from the page (resolvers/rooms.py, resolvers/message_fields.py).

Rows come back collected in one record (GraphDB.read_table) and are put in order here: the
order of `collect` after `ORDER BY` is what Neo4j and ArcadeDB do, not what Cypher promises.
"""

from __future__ import annotations

from dataclasses import dataclass

from graph_db.driver import GraphDB
from graph_db.messages import FIELDS as MESSAGE_FIELDS
from graph_db.messages import MessageRecord, ReactionRecord, reaction_records
from graph_db.models import RoomRecord, UserRecord
from graph_db.rooms import RoomFilterArgs, visible

ROOMS = """
WITH r WHERE $afterMs IS NULL OR r.createdAt < $afterMs
  OR (r.createdAt = $afterMs AND r.id < $afterId)
WITH r ORDER BY r.createdAt DESC, r.id DESC LIMIT $limit
OPTIONAL MATCH (h:User {id: r.hostId})
RETURN collect([r {.*}, h {.*}, COUNT { (r)<-[:MEMBER_OF]-(:User) }]) AS rows
"""

MESSAGES = f"""
MATCH (m:Message {{roomId: $roomId}})
WHERE m.rootId IS NULL AND ($before IS NULL OR m.seq < $before)
WITH m ORDER BY m.seq DESC LIMIT $limit
OPTIONAL MATCH (a:User {{id: m.authorId}})
RETURN collect([{MESSAGE_FIELDS}, a {{.*}},
                [(m)<-[x:REACTED]-(u:User) | [u.id, x.emoji, x.at]],
                COUNT {{ (:Message {{rootId: m.id}}) }}]) AS rows
"""


@dataclass(frozen=True, slots=True)
class ListedRoom:
    room: RoomRecord
    host: UserRecord | None
    participant_count: int


@dataclass(frozen=True, slots=True)
class ListedMessage:
    message: MessageRecord
    author: UserRecord | None
    reactions: list[ReactionRecord]
    reply_count: int


async def rooms_page(db: GraphDB, filt: RoomFilterArgs, *, after: tuple[int, str] | None,
                     limit: int) -> list[ListedRoom]:
    """Up to `limit` rooms the filter lets its viewer see, newest first."""
    rows = await db.read_table(
        visible(filt) + ROOMS, ("r", "host", "n"), **filt.params(), limit=limit,
        afterMs=after[0] if after else None, afterId=after[1] if after else None)
    listed = [ListedRoom(RoomRecord.from_row(r["r"]),
                         UserRecord.from_row(r["host"]) if r["host"] else None, int(r["n"]))
              for r in rows]
    listed.sort(key=lambda x: (x.room.created_ms, x.room.id), reverse=True)
    return listed


async def messages_page(db: GraphDB, room_id: str, *, before_seq: int | None,
                        limit: int) -> list[ListedMessage]:
    """Up to `limit` top-level messages before `before_seq`, newest last."""
    rows = await db.read_table(MESSAGES, ("m", "author", "reactions", "replies"),
                               roomId=room_id, before=before_seq, limit=limit)
    listed = [ListedMessage(MessageRecord.from_row(r["m"]),
                            UserRecord.from_row(r["author"]) if r["author"] else None,
                            reaction_records(r["reactions"]), int(r["replies"]))
              for r in rows]
    listed.sort(key=lambda x: x.message.seq)
    return listed

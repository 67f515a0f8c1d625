"""Constraints and indexes, created idempotently at start-up (Neo4j 5 DDL, also on ArcadeDB)."""

from __future__ import annotations

from graph_db.driver import GraphDB

STATEMENTS = (
    "CREATE CONSTRAINT user_id IF NOT EXISTS FOR (u:User) REQUIRE u.id IS UNIQUE",
    "CREATE CONSTRAINT room_id IF NOT EXISTS FOR (r:Room) REQUIRE r.id IS UNIQUE",
    "CREATE CONSTRAINT join_request_id IF NOT EXISTS FOR (j:JoinRequest) REQUIRE j.id IS UNIQUE",
    "CREATE INDEX room_created IF NOT EXISTS FOR (r:Room) ON (r.createdAt)",
    "CREATE INDEX user_name IF NOT EXISTS FOR (u:User) ON (u.displayName)",
    "CREATE INDEX join_request_room IF NOT EXISTS FOR (j:JoinRequest) ON (j.roomId)",
    "CREATE CONSTRAINT message_id IF NOT EXISTS FOR (m:Message) REQUIRE m.id IS UNIQUE",
    "CREATE CONSTRAINT message_client_key IF NOT EXISTS FOR (m:Message) "
    "REQUIRE m.clientKey IS UNIQUE",
    "CREATE INDEX message_room_seq IF NOT EXISTS FOR (m:Message) ON (m.roomId, m.seq)",
    "CREATE INDEX message_root IF NOT EXISTS FOR (m:Message) ON (m.rootId)",
    "CREATE INDEX event_room_seq IF NOT EXISTS FOR (e:Event) ON (e.roomId, e.seq)",
    # Notifications: exactly one per key (graph_db/notifications.py), read per user by time.
    "CREATE CONSTRAINT notification_key IF NOT EXISTS FOR (n:Notification) "
    "REQUIRE n.key IS UNIQUE",
    "CREATE INDEX notification_user IF NOT EXISTS FOR (n:Notification) ON (n.userId)",
    # Shared files (graph_db/files.py): by id, a room's list, a message's attachments, the
    # rescans' queue.
    "CREATE CONSTRAINT file_id IF NOT EXISTS FOR (f:File) REQUIRE f.id IS UNIQUE",
    "CREATE INDEX file_room IF NOT EXISTS FOR (f:File) ON (f.roomId)",
    "CREATE INDEX file_message IF NOT EXISTS FOR (f:File) ON (f.messageId)",
    "CREATE INDEX file_status IF NOT EXISTS FOR (f:File) ON (f.status)",
    # Email digests (graph_db/digests.py): notifications by id and by digest, the outbox.
    "CREATE CONSTRAINT notification_id IF NOT EXISTS FOR (n:Notification) REQUIRE n.id IS UNIQUE",
    "CREATE INDEX notification_digest IF NOT EXISTS FOR (n:Notification) ON (n.digestId)",
    "CREATE CONSTRAINT digest_id IF NOT EXISTS FOR (d:Digest) REQUIRE d.id IS UNIQUE",
    "CREATE INDEX digest_status IF NOT EXISTS FOR (d:Digest) ON (d.status)",
    # The assistant's replies (graph_db/assistant.py): by id, and a room's newest.
    "CREATE CONSTRAINT assistant_reply_id IF NOT EXISTS FOR (a:AssistantReply) "
    "REQUIRE a.id IS UNIQUE",
    "CREATE INDEX assistant_reply_room IF NOT EXISTS FOR (a:AssistantReply) ON (a.roomId)",
    # The sweep of replies a dead instance left streaming.
    "CREATE INDEX assistant_reply_status IF NOT EXISTS FOR (a:AssistantReply) "
    "ON (a.status, a.createdAt)",
    # The audit trail (graph_db/audit.py): read newest first, by actor or by room.
    "CREATE INDEX audit_at IF NOT EXISTS FOR (e:AuditEvent) ON (e.atMs)",
    "CREATE INDEX audit_actor IF NOT EXISTS FOR (e:AuditEvent) ON (e.actorId)",
    "CREATE INDEX audit_room IF NOT EXISTS FOR (e:AuditEvent) ON (e.roomId)",
)


async def ensure_schema(db: GraphDB) -> None:
    # DDL cannot share a transaction with other statements on Neo4j: one write each.
    for statement in STATEMENTS:
        await db.write_rows(statement)

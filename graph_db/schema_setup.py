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
)


async def ensure_schema(db: GraphDB) -> None:
    # DDL cannot share a transaction with other statements on Neo4j: one write each.
    for statement in STATEMENTS:
        await db.write_rows(statement)

"""User nodes: upserted from token claims, looked up in batches, searched by name."""

from __future__ import annotations

from neo4j.exceptions import ConstraintError

from graph_db.batch import by_key, unique
from graph_db.driver import GraphDB, Tx
from graph_db.models import Role, UserRecord, now_ms

UPSERT = """
MERGE (u:User {id: $id})
ON CREATE SET u.createdAt = $now
SET u.displayName = $name, u.role = $role, u.email = $email, u.updatedAt = $now
RETURN u {.*} AS u
"""

BY_IDS = """
UNWIND $ids AS id
OPTIONAL MATCH (u:User {id: id})
RETURN collect([id, u {.*}]) AS rows
"""

# Patients' identities are health information: people who may not see every user
# only find non-patients and the people they share a (not deleted) room with.
SEARCH = """
MATCH (u:User)
WHERE ($role IS NULL OR u.role = $role)
  AND ($search IS NULL OR toLower(u.displayName) CONTAINS $search)
  AND ($afterName IS NULL OR u.displayName > $afterName
       OR (u.displayName = $afterName AND u.id > $afterId))
  AND ($seesAll OR u.role <> 'patient' OR u.id = $viewer
       OR EXISTS { MATCH (:User {id: $viewer})-[:MEMBER_OF]->(r:Room)<-[:MEMBER_OF]-(u)
                   WHERE r.deletedAt IS NULL })
RETURN u {.*} AS u
ORDER BY u.displayName, u.id
LIMIT $limit
"""

SHARES_ROOM = """
UNWIND $ids AS id
RETURN id, EXISTS {
  MATCH (:User {id: $viewer})-[:MEMBER_OF]->(r:Room)<-[:MEMBER_OF]-(:User {id: id})
  WHERE r.deletedAt IS NULL } AS shared
"""


async def upsert_user(db: GraphDB, *, user_id: str, name: str, role: Role,
                      email: str | None) -> UserRecord:
    # Most tokens name a user as the graph already has them (every client reconnecting after
    # a deploy does): a read answers those, and only a change pays for a write transaction.
    found = (await db.coalesced(users_by_ids).load_many([user_id]))[0]
    if found is not None and (found.display_name, found.role, found.email) == (name, role,
                                                                                email):
        return found
    params = {"id": user_id, "name": name, "role": role.value, "email": email, "now": now_ms()}

    async def work(tx: Tx) -> UserRecord:
        row = await tx.one(UPSERT, **params)
        assert row is not None
        return UserRecord.from_row(row["u"])

    try:
        return await db.write(work)
    except ConstraintError:
        # Two first requests of one new user raced to MERGE; the loser now finds the node.
        return await db.write(work)


async def users_by_ids(db: GraphDB, ids: list[str]) -> list[UserRecord | None]:
    rows = await db.read_table(BY_IDS, ("key", "u"), ids=unique(ids))
    return by_key(ids, rows, lambda r: UserRecord.from_row(r["u"]) if r["u"] else None, None)


async def shares_room_with(db: GraphDB, viewer_id: str, ids: list[str]) -> list[bool]:
    rows = await db.read_rows(SHARES_ROOM, ids=unique(ids), viewer=viewer_id)
    return by_key(ids, rows, lambda r: bool(r["shared"]), False, field="id")


async def search_users(
    db: GraphDB, *, viewer_id: str, sees_all: bool, search: str | None, role: Role | None,
    after: tuple[str, str] | None, limit: int,
) -> list[UserRecord]:
    rows = await db.read_rows(
        SEARCH, viewer=viewer_id, seesAll=sees_all,
        search=search.lower() if search else None, role=role.value if role else None,
        afterName=after[0] if after else None, afterId=after[1] if after else None,
        limit=limit,
    )
    return [UserRecord.from_row(r["u"]) for r in rows]

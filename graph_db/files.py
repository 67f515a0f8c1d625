"""Shared files: (:File) metadata nodes; the bytes are encrypted blobs outside the graph
(files/storage.py). The wrapped data key lives here: deleting it (crypto-shredding) makes the
blob unreadable, backups included.

(:User)-[:UPLOADED]->(:File)-[:SHARED_IN]->(:Room); an attachment is (:Message)-[:ATTACHES]->
(:File), and File.messageId says it is taken."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from graph_db.driver import GraphDB, Tx
from graph_db.models import _at, now_ms

PENDING_SCAN, CLEAN, UNSCANNED, INFECTED, DELETED = (
    "PENDING_SCAN", "CLEAN", "UNSCANNED", "INFECTED", "DELETED")
SERVABLE = frozenset({CLEAN, UNSCANNED})


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    room_id: str
    uploader_id: str
    name: str
    content_type: str
    size: int
    sha256: str
    status: str
    deidentified: bool
    created_ms: int
    message_id: str | None
    key_id: str | None
    wrapped_key: bytes | None  # None once destroyed

    @property
    def created_at(self) -> datetime:
        return _at(self.created_ms)

    @classmethod
    def from_row(cls, f: dict[str, Any]) -> FileRecord:
        wrapped = f.get("wrappedKey")
        return cls(id=f["id"], room_id=f["roomId"], uploader_id=f["uploaderId"],
                   name=f["name"], content_type=f["contentType"], size=int(f["size"]),
                   sha256=f["sha256"], status=f["status"],
                   deidentified=bool(f.get("deidentified")), created_ms=int(f["createdAt"]),
                   message_id=f.get("messageId"), key_id=f.get("keyId"),
                   wrapped_key=base64.b64decode(wrapped) if wrapped else None)


_FIELDS = "f {.*} AS f"

CREATE = f"""
MATCH (u:User {{id: $uploaderId}}), (r:Room {{id: $roomId}})
CREATE (f:File {{id: $id, roomId: $roomId, uploaderId: $uploaderId, name: $name,
                 contentType: $contentType, size: $size, sha256: $sha256, status: $status,
                 deidentified: $deidentified, createdAt: $now, keyId: $keyId,
                 wrappedKey: $wrappedKey, messageId: null}})
CREATE (u)-[:UPLOADED]->(f)-[:SHARED_IN]->(r)
RETURN {_FIELDS}
"""

BY_IDS = f"""
UNWIND $ids AS id
MATCH (f:File {{id: id}})
RETURN {_FIELDS}
"""

# Newest first; deleted and infected files are not listed.
ROOM_PAGE = f"""
MATCH (f:File {{roomId: $roomId}})
WHERE f.status IN ['CLEAN', 'UNSCANNED', 'PENDING_SCAN']
  AND ($afterAt IS NULL OR f.createdAt < $afterAt
       OR (f.createdAt = $afterAt AND f.id < $afterId))
RETURN {_FIELDS}
ORDER BY f.createdAt DESC, f.id DESC
LIMIT $limit
"""

SET_STATUS = f"""
MATCH (f:File {{id: $id}})
WHERE f.status = $from
SET f.status = $to, f.scanSignature = $signature, f.scannedAt = $now
RETURN {_FIELDS}
"""

PENDING = f"""
MATCH (f:File {{status: 'PENDING_SCAN'}})
RETURN {_FIELDS}
ORDER BY f.createdAt
LIMIT $limit
"""

# A deleted file keeps its metadata (the audit trail names it) but loses its data key.
DELETE = f"""
MATCH (f:File {{id: $id}})
WHERE f.status <> 'DELETED'
SET f.status = 'DELETED', f.deletedAt = $now, f.deletedById = $by
RETURN {_FIELDS}
"""

SHRED = """
MATCH (f:File)
WHERE f.status IN ['DELETED', 'INFECTED'] AND f.wrappedKey IS NOT NULL
  AND coalesce(f.deletedAt, f.scannedAt, f.createdAt) < $before
SET f.wrappedKey = null
RETURN f.id AS id
"""

# Attach: the sender's own files of this room, clean, not attached elsewhere.
ATTACH = """
UNWIND $ids AS id
MATCH (f:File {id: id, roomId: $roomId, uploaderId: $userId})
WHERE f.messageId IS NULL AND f.status IN ['CLEAN', 'UNSCANNED']
MATCH (m:Message {id: $messageId})
SET f.messageId = $messageId
CREATE (m)-[:ATTACHES]->(f)
RETURN f.id AS id
"""

ATTACHABLE = """
UNWIND $ids AS id
MATCH (f:File {id: id, roomId: $roomId, uploaderId: $userId})
WHERE f.messageId IS NULL AND f.status IN ['CLEAN', 'UNSCANNED']
RETURN f.id AS id
"""

OF_MESSAGES = f"""
UNWIND $ids AS id
MATCH (f:File {{messageId: id}})
WHERE f.status IN ['CLEAN', 'UNSCANNED']
RETURN id AS key, {_FIELDS}
ORDER BY f.createdAt
"""


def _wrapped(key: bytes) -> str:
    return base64.b64encode(key).decode()


async def create(db: GraphDB, *, file_id: str, room_id: str, uploader_id: str, name: str,
                 content_type: str, size: int, sha256: str, status: str, deidentified: bool,
                 key_id: str, wrapped_key: bytes) -> FileRecord | None:
    """None when the room (or the user) is gone."""
    rows = await db.write_rows(CREATE, id=file_id, roomId=room_id, uploaderId=uploader_id,
                               name=name, contentType=content_type, size=size, sha256=sha256,
                               status=status, deidentified=deidentified, now=now_ms(),
                               keyId=key_id, wrappedKey=_wrapped(wrapped_key))
    return FileRecord.from_row(rows[0]["f"]) if rows else None


async def files_by_ids(db: GraphDB, ids: list[str]) -> list[FileRecord | None]:
    rows = await db.read_rows(BY_IDS, ids=ids)
    found = {r["f"]["id"]: FileRecord.from_row(r["f"]) for r in rows}
    return [found.get(i) for i in ids]


async def room_page(db: GraphDB, room_id: str, *, after: tuple[int, str] | None,
                    limit: int) -> list[FileRecord]:
    rows = await db.read_rows(ROOM_PAGE, roomId=room_id, afterAt=after[0] if after else None,
                              afterId=after[1] if after else None, limit=limit)
    return [FileRecord.from_row(r["f"]) for r in rows]


async def set_status(db: GraphDB, file_id: str, *, was: str, now: str,
                     signature: str | None = None) -> FileRecord | None:
    """None when the file is not in state `was` any more (another instance got there)."""
    rows = await db.write_rows(SET_STATUS, id=file_id, **{"from": was}, to=now,
                               signature=signature, now=now_ms())
    return FileRecord.from_row(rows[0]["f"]) if rows else None


async def pending(db: GraphDB, limit: int = 50) -> list[FileRecord]:
    rows = await db.read_rows(PENDING, limit=limit)
    return [FileRecord.from_row(r["f"]) for r in rows]


async def delete(db: GraphDB, file_id: str, by: str) -> FileRecord | None:
    rows = await db.write_rows(DELETE, id=file_id, now=now_ms(), by=by)
    return FileRecord.from_row(rows[0]["f"]) if rows else None


async def shred(db: GraphDB, before_ms: int) -> list[str]:
    """Destroys the data keys of files deleted (or refused) before `before_ms`."""
    rows = await db.write_rows(SHRED, before=before_ms)
    return [str(r["id"]) for r in rows]


async def attachable(db: GraphDB, room_id: str, user_id: str, ids: list[str]) -> list[str]:
    rows = await db.read_rows(ATTACHABLE, ids=ids, roomId=room_id, userId=user_id)
    return [str(r["id"]) for r in rows]


async def attach(tx: Tx, room_id: str, user_id: str, message_id: str,
                 ids: list[str]) -> list[str]:
    rows = await tx.rows(ATTACH, ids=ids, roomId=room_id, userId=user_id, messageId=message_id)
    return [str(r["id"]) for r in rows]


async def of_messages(db: GraphDB, ids: list[str]) -> list[list[FileRecord]]:
    rows = await db.read_rows(OF_MESSAGES, ids=ids)
    found: dict[str, list[FileRecord]] = {}
    for row in rows:
        found.setdefault(row["key"], []).append(FileRecord.from_row(row["f"]))
    return [found.get(i, []) for i in ids]

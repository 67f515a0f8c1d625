"""The audit trail in the graph: (:AuditEvent) nodes, appended in batches and read by filter.

Append-only: this module is the only code that touches AuditEvent, and it only creates and
reads them (tests/test_audit_trail.py checks every statement). An event holds ids, never content:
no message text, no token. Its room is a property, not a relationship, so deleting a room
(DETACH DELETE) leaves its trail whole.
"""

from __future__ import annotations

import enum
import itertools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from graph_db.driver import GraphDB, Tx

_sequence = itertools.count()


def record_id(at_ms: int) -> str:
    """Ordered like the records of this process (the trail reads newest first by time, then
    id: records of one millisecond keep their order), unique across processes."""
    return f"{at_ms:012x}{next(_sequence) % (1 << 32):08x}{secrets.token_hex(6)}"


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"  # refused, with the code the caller got (NOT_FOUND included)
    FAILED = "failed"  # the service failed (SERVICE_UNAVAILABLE, ...) or the caller left


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: str
    at_ms: int
    action: str
    outcome: Outcome
    actor_id: str | None = None
    actor_role: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    room_id: str | None = None
    code: str | None = None
    request_id: str | None = None
    client_address: str | None = None
    user_agent: str | None = None
    # JSON text: what a record needs beyond these (an assistant call's measurements), ids and
    # numbers only, never content.
    details: str | None = None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.at_ms / 1000, UTC)

    def row(self) -> dict[str, Any]:
        """The stored (and streamed) form: camelCase, the outcome's value."""
        return dict(zip(_CAMEL.values(), self.values(), strict=True))

    def values(self) -> list[Any]:
        """The fields in declaration order (as APPEND reads them): packed as a list, a batch
        costs the driver half of what maps with their keys would."""
        return [self.id, self.at_ms, self.action, self.outcome.value, self.actor_id,
                self.actor_role, self.object_type, self.object_id, self.room_id, self.code,
                self.request_id, self.client_address, self.user_agent, self.details]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditRecord:
        values: dict[str, Any] = {name: row.get(camel) for name, camel in _CAMEL.items()}
        values["outcome"] = Outcome(values["outcome"])
        return cls(**values)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_CAMEL = {name: _camel(name) for name in AuditRecord.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """What an auditor asks for; None: any. Times are epoch ms, `to` exclusive."""

    actor_id: str | None = None
    room_id: str | None = None
    action: str | None = None
    outcome: Outcome | None = None
    from_ms: int | None = None
    to_ms: int | None = None


# Each row is AuditRecord.values().
APPEND = """
UNWIND $rows AS r
CREATE (:AuditEvent {id: r[0], atMs: r[1], action: r[2], outcome: r[3], actorId: r[4],
  actorRole: r[5], objectType: r[6], objectId: r[7], roomId: r[8], code: r[9],
  requestId: r[10], clientAddress: r[11], userAgent: r[12], details: r[13]})
"""

# Newest first; the cursor is the last (atMs, id) seen.
PAGE = """
MATCH (e:AuditEvent)
WHERE ($actorId IS NULL OR e.actorId = $actorId)
  AND ($roomId IS NULL OR e.roomId = $roomId)
  AND ($action IS NULL OR e.action = $action)
  AND ($outcome IS NULL OR e.outcome = $outcome)
  AND ($fromMs IS NULL OR e.atMs >= $fromMs)
  AND ($toMs IS NULL OR e.atMs < $toMs)
  AND ($afterAt IS NULL OR e.atMs < $afterAt OR (e.atMs = $afterAt AND e.id < $afterId))
WITH e ORDER BY e.atMs DESC, e.id DESC LIMIT $limit
RETURN e {.*} AS e
"""


async def append(db: GraphDB, records: list[AuditRecord]) -> None:
    """One statement for the whole batch."""
    rows = [r.values() for r in records]

    async def work(tx: Tx) -> None:
        await tx.rows(APPEND, rows=rows)

    await db.write(work)


async def page(db: GraphDB, query: AuditQuery, *, after: tuple[int, str] | None,
               limit: int) -> list[AuditRecord]:
    rows = await db.read_rows(
        PAGE, actorId=query.actor_id, roomId=query.room_id, action=query.action,
        outcome=query.outcome.value if query.outcome else None, fromMs=query.from_ms,
        toMs=query.to_ms, afterAt=after[0] if after else None,
        afterId=after[1] if after else None, limit=limit)
    return [AuditRecord.from_row(row["e"]) for row in rows]

"""What graph_db returns: frozen dataclasses with aware UTC datetimes, never raw records."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class Role(enum.Enum):
    ADMIN = "admin"
    TEACHER = "teacher"
    DOCTOR = "doctor"
    STUDENT = "student"
    PATIENT = "patient"


class RoomType(enum.Enum):
    CASE_DISCUSSION = "CASE_DISCUSSION"
    TEACHING = "TEACHING"
    CONSULTATION = "CONSULTATION"


class RoomVisibility(enum.Enum):
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"


class ParticipantRole(enum.Enum):
    HOST = "HOST"
    MODERATOR = "MODERATOR"
    MEMBER = "MEMBER"


class JoinRequestStatus(enum.Enum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    # Times are stored as epoch milliseconds: ArcadeDB returns datetimes naive.
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    display_name: str
    role: Role
    email: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UserRecord:
        return cls(
            id=row["id"], display_name=row["displayName"], role=Role(row["role"]),
            email=row.get("email"), created_at=_at(row["createdAt"]),
        )


@dataclass(frozen=True, slots=True)
class RoomRecord:
    id: str
    name: str
    description: str | None
    type: RoomType
    visibility: RoomVisibility
    max_participants: int
    host_id: str
    created_at: datetime
    updated_at: datetime
    created_ms: int
    # The room's event log when read: its last seq, and the seq up to which it was pruned
    # (a subscription's cursor is checked against these in the same read as its access).
    seq: int = 0
    pruned_seq: int = 0
    # Its hosts may turn the assistant off (absent: on).
    assistant_enabled: bool = True

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RoomRecord:
        return cls(
            id=row["id"], name=row["name"], description=row.get("description"),
            type=RoomType(row["type"]), visibility=RoomVisibility(row["visibility"]),
            max_participants=row["maxParticipants"], host_id=row["hostId"],
            created_at=_at(row["createdAt"]), updated_at=_at(row["updatedAt"]),
            created_ms=row["createdAt"], seq=row.get("seq") or 0,
            pruned_seq=row.get("prunedSeq") or 0,
            assistant_enabled=row.get("assistantEnabled") is not False,
        )


@dataclass(frozen=True, slots=True)
class ParticipantRecord:
    room_id: str
    user_id: str
    role: ParticipantRole
    joined_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ParticipantRecord:
        return cls(
            room_id=row["roomId"], user_id=row["userId"],
            role=ParticipantRole(row["role"]), joined_at=_at(row["joinedAt"]),
        )


@dataclass(frozen=True, slots=True)
class JoinRequestRecord:
    id: str
    room_id: str
    user_id: str
    status: JoinRequestStatus
    message: str | None
    created_at: datetime
    decided_by_id: str | None
    decided_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JoinRequestRecord:
        return cls(
            id=row["id"], room_id=row["roomId"], user_id=row["userId"],
            status=JoinRequestStatus(row["status"]), message=row.get("message"),
            created_at=_at(row["createdAt"]), decided_by_id=row.get("decidedById"),
            decided_at=from_ms(row.get("decidedAt")),
        )

"""GraphQL enums, registered over the domain's Python enums (one source of truth)."""

from __future__ import annotations

import enum

import strawberry

from graph_db.models import JoinRequestStatus, ParticipantRole, Role, RoomType, RoomVisibility

for _domain_enum in (Role, RoomType, RoomVisibility, ParticipantRole, JoinRequestStatus):
    strawberry.enum(_domain_enum)  # registers the class in place


@strawberry.enum
class JoinStatus(enum.Enum):
    JOINED = "JOINED"
    PENDING = "PENDING"


__all__ = ["JoinRequestStatus", "JoinStatus", "ParticipantRole", "Role", "RoomType",
           "RoomVisibility"]

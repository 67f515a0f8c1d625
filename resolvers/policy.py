"""The access policy in one place: pure functions of role, room and membership.

README.md shows the same rules as a table; tests/test_policy_matrix.py checks every cell.
"""

from __future__ import annotations

import enum

from graph_db.models import ParticipantRecord, ParticipantRole, Role, RoomRecord, RoomType
from graph_db.models import RoomVisibility as Vis

ROOM_CREATORS: dict[RoomType, frozenset[Role]] = {
    RoomType.CASE_DISCUSSION: frozenset({Role.ADMIN, Role.DOCTOR, Role.TEACHER}),
    RoomType.TEACHING: frozenset({Role.ADMIN, Role.TEACHER, Role.DOCTOR}),
    # A consultation is clinical care: only doctors (and admins) open one.
    RoomType.CONSULTATION: frozenset({Role.ADMIN, Role.DOCTOR}),
}

MANAGERS = frozenset({ParticipantRole.HOST, ParticipantRole.MODERATOR})


class JoinMode(enum.Enum):
    NOW = "now"
    REQUEST = "request"
    DENIED = "denied"


def can_create_room(role: Role, room_type: RoomType) -> bool:
    return role in ROOM_CREATORS[room_type]


def can_see_room(role: Role, room: RoomRecord, member: ParticipantRecord | None,
                 invited: bool, pending: bool = False) -> bool:
    """PRIVATE rooms are invisible to non-members, except to someone waiting on their own
    join request (they see it as outsiders see a PUBLIC room: no people, no messages);
    patients see only rooms they were invited to (their presence in a room is health
    information, and so is a case)."""
    if role is Role.ADMIN or member is not None or invited:
        return True
    if role is Role.PATIENT:
        return False
    return room.visibility is Vis.PUBLIC or pending


def host_roles(room_type: RoomType) -> list[str]:
    """Who may take over as host when the last one leaves."""
    return sorted(role.value for role in ROOM_CREATORS[room_type])


def can_hold_role(user_role: Role, room_type: RoomType, role: ParticipantRole) -> bool:
    """Hosts are people who could have opened the room; patients never moderate."""
    if role is ParticipantRole.HOST:
        return can_create_room(user_role, room_type)
    if role is ParticipantRole.MODERATOR:
        return user_role is not Role.PATIENT
    return True


def can_see_inside(role: Role, member: ParticipantRecord | None) -> bool:
    """Participants (and admins, who moderate) see who is in a room."""
    return role is Role.ADMIN or member is not None


def can_manage(role: Role, member: ParticipantRecord | None) -> bool:
    """Update the room, invite, decide join requests, remove members."""
    return role is Role.ADMIN or (member is not None and member.role in MANAGERS)


def can_delete(role: Role, member: ParticipantRecord | None) -> bool:
    return role is Role.ADMIN or (member is not None and member.role is ParticipantRole.HOST)


def can_assign_roles(role: Role, member: ParticipantRecord | None) -> bool:
    return can_delete(role, member)


def can_remove(role: Role, member: ParticipantRecord | None,
               target: ParticipantRecord) -> bool:
    """Moderators remove members; hosts and admins remove anyone."""
    if role is Role.ADMIN or (member is not None and member.role is ParticipantRole.HOST):
        return True
    return (member is not None and member.role is ParticipantRole.MODERATOR
            and target.role is ParticipantRole.MEMBER)


def join_mode(role: Role, room: RoomRecord, invited: bool) -> JoinMode:
    if invited or role is Role.ADMIN:
        return JoinMode.NOW
    if role is Role.PATIENT:
        return JoinMode.DENIED
    return JoinMode.NOW if room.visibility is Vis.PUBLIC else JoinMode.REQUEST


def sees_all_users(role: Role) -> bool:
    """Who may find patients they share no room with (to invite them to a consultation)."""
    return role in {Role.ADMIN, Role.DOCTOR, Role.TEACHER}


def can_call(role: Role, member: ParticipantRecord | None) -> bool:
    """Join a room's call, signal in it, share a screen: participants only (an admin
    moderates rooms without being in their calls)."""
    return member is not None


def can_take_over_share(role: Role, member: ParticipantRecord | None) -> bool:
    """Stop or re-tune someone else's screen share, or take it over."""
    return member is not None and member.role in MANAGERS


def can_record(role: Role, member: ParticipantRecord | None) -> bool:
    """Start and stop a call's recording: the room's hosts."""
    return member is not None and member.role is ParticipantRole.HOST

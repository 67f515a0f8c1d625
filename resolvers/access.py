"""One access helper per object kind: the same NOT_FOUND for "missing" and "not yours"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from graph_db.models import JoinRequestRecord, ParticipantRecord, Role, RoomRecord, UserRecord
from resolvers import audit, policy
from resolvers.context import Context, Viewer
from resolvers.errors import Forbidden, NotFound

MAX_ID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class RoomAccess:
    viewer: Viewer
    room: RoomRecord
    member: ParticipantRecord | None
    invited: bool


def _plausible(object_id: str) -> bool:
    return 0 < len(object_id) <= MAX_ID_LENGTH


async def find_room(ctx: Context, room_id: str) -> RoomAccess | None:
    """The room and the caller's standing in it, or None when it is missing or invisible."""
    viewer = ctx.viewer
    if not _plausible(room_id):
        return None
    audit.note_room(room_id)  # the audit record of the operation names the room
    loaders = ctx.loaders
    key = (room_id, viewer.id)
    standing = await loaders.standing.load(key)
    if standing is None:
        return None
    room, member = standing.room, standing.member
    # Later field resolvers ask for these separately: answer them from this read.
    loaders.room.prime(room_id, room)
    loaders.membership.prime(key, member)
    invited = member is not None or standing.invited
    if not policy.can_see_room(viewer.role, room, member, invited, standing.pending):
        return None
    return RoomAccess(viewer, room, member, invited)


async def access_room(ctx: Context, room_id: str) -> RoomAccess:
    found = await find_room(ctx, room_id)
    if found is None:
        raise NotFound("room")
    return found


Rule = Callable[[Role, ParticipantRecord | None], bool]


async def access_room_for(ctx: Context, room_id: str, rule: Rule, action: str) -> RoomAccess:
    """A room the caller can see and may act on; FORBIDDEN only once it is visible."""
    found = await access_room(ctx, room_id)
    if not rule(found.viewer.role, found.member):
        raise Forbidden(f"you may not {action} this room")
    return found


async def access_user(ctx: Context, user_id: str) -> UserRecord:
    user = await ctx.loaders.user.load(user_id) if _plausible(user_id) else None
    if user is None or not await can_see_user(ctx, user):
        raise NotFound("user")
    return user


async def can_see_user(ctx: Context, user: UserRecord) -> bool:
    viewer = ctx.viewer
    if user.id == viewer.id or policy.sees_all_users(viewer.role):
        return True
    if user.role is not Role.PATIENT:
        return True
    return await ctx.loaders.shares_room.load(user.id)


async def access_join_request(ctx: Context, request_id: str) -> tuple[JoinRequestRecord,
                                                                       RoomAccess]:
    """A join request the caller may decide: one of the room's hosts, moderators or admins."""
    request = await ctx.loaders.join_request.load(request_id) if _plausible(request_id) else None
    found = await find_room(ctx, request.room_id) if request else None
    if request is None or found is None or not policy.can_manage(found.viewer.role,
                                                                  found.member):
        raise NotFound("join request")
    return request, found

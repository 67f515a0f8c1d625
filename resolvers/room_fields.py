"""Fields of a Room: what each caller may see inside it."""

from __future__ import annotations

from graph_db.audit import Outcome
from graph_db.models import ParticipantRecord, RoomRecord, UserRecord
from resolvers import audit, maybe, policy
from resolvers.access import find_room
from resolvers.context import Context
from resolvers.maybe import MaybeAwaitable


def host(ctx: Context, room: RoomRecord) -> MaybeAwaitable[UserRecord]:
    return maybe.then(maybe.load(ctx.loaders.user, room.host_id), _existing_host)


def _existing_host(user: UserRecord | None) -> UserRecord:
    assert user is not None, "a room's host is a user node"
    return user


async def participants(ctx: Context, room: RoomRecord) -> list[ParticipantRecord]:
    # Non-members of a PUBLIC room see that it exists, not who is in it.
    member = await ctx.loaders.membership.load((room.id, ctx.viewer.id))
    allowed = policy.can_see_inside(ctx.viewer.role, member)
    audit.read(ctx, "Room.participants", room.id, allowed=allowed)
    if not allowed:
        return []
    return await ctx.loaders.participants.load(room.id)


def participant_count(ctx: Context, room: RoomRecord) -> MaybeAwaitable[int]:
    return maybe.load(ctx.loaders.participant_count, room.id)


async def my_membership(ctx: Context, room: RoomRecord) -> ParticipantRecord | None:
    return await ctx.loaders.membership.load((room.id, ctx.viewer.id))


async def user_of(ctx: Context, user_id: str) -> UserRecord:
    user = await ctx.loaders.user.load(user_id)
    assert user is not None, "edges only point at existing users"
    return user


async def room_of(ctx: Context, room_id: str) -> RoomRecord | None:
    """A room as a gateway asks for it (`_entities`): each one is a read of the trail."""
    found = await find_room(ctx, room_id)
    audit.record(ctx, "query._entities", Outcome.ALLOWED if found else Outcome.DENIED,
                 object_type="Room", object_id=room_id, room_id=room_id,
                 code=None if found else "NOT_FOUND")
    return found.room if found else None

"""The room event stream: who may subscribe (and from where), typing, and what events
point at."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from graph_db import participants
from graph_db.driver import GraphDB
from graph_db.events import EventType
from graph_db.models import (
    JoinRequestRecord,
    ParticipantRecord,
    ParticipantRole,
    RoomRecord,
    UserRecord,
)
from realtime import cursor as event_cursor
from resolvers import audit, policy
from resolvers.access import access_room
from resolvers.context import Context
from resolvers.errors import BadInput, Forbidden, NotFound, ResyncRequired, ServiceError


@dataclass(frozen=True, slots=True)
class StreamStart:
    room: RoomRecord
    after_seq: int | None
    manager: bool


async def authorize(ctx: Context, room_id: str, after: str | None) -> StreamStart:
    """Only participants subscribe; a cursor must be this room's and still in the log.
    Allowed or not, the trail records the start (subscription.start)."""
    try:
        start = await _authorize(ctx, room_id, after)
    except BaseException as exc:
        audit.subscription(ctx, "start", room_id, *audit.outcome_of(exc))
        raise
    audit.subscription(ctx, "start", room_id)
    return start


async def _authorize(ctx: Context, room_id: str, after: str | None) -> StreamStart:
    found = await access_room(ctx, room_id)
    if found.member is None:
        raise Forbidden("only participants follow a room's events")
    after_seq = None
    if after is not None:
        try:
            after_seq = event_cursor.decode(room_id, after)
        except ValueError as exc:
            raise BadInput("after", str(exc)) from None
        room = found.room  # read with the access check: its log's head and pruned point
        if after_seq > room.seq:
            raise BadInput("after", "cursor is ahead of this room's events")
        if after_seq < room.pruned_seq:
            raise ResyncRequired("events after this cursor are no longer kept: "
                                 "refetch the room, then subscribe without a cursor")
    manager = policy.can_manage(found.viewer.role, found.member)
    return StreamStart(room=found.room, after_seq=after_seq, manager=manager)


async def still_participant(db: GraphDB, room_id: str, user_id: str) -> bool:
    """Re-checked once attached: a removal that raced the subscribe is caught here."""
    found = await participants.memberships(db, [(room_id, user_id)])
    return found[0] is not None


async def set_typing(ctx: Context, room_id: str, typing: bool) -> bool:
    found = await access_room(ctx, room_id)
    if found.member is None:
        raise Forbidden("only participants type in a room")
    if not ctx.services.typing.should_announce(room_id, found.viewer.id, typing):
        return True  # a refresh within a second: the stream already knows
    await ctx.services.hub.publish_ephemeral(room_id, EventType.TYPING_CHANGED,
                                             found.viewer.id, typing=typing)
    return True


async def room_events(ctx: Context, room_id: str, after: str | None
                      ) -> AsyncGenerator[Any, None]:
    """Reached only off the WebSocket fan-out path (which serves roomEvents itself)."""
    await authorize(ctx, room_id, after)
    raise ServiceError("roomEvents is served over WebSocket (graphql-transport-ws) only")
    yield  # pragma: no cover  (makes this an async generator)


# -- what events point at ------------------------------------------------------------------

async def message_of(ctx: Context, message_id: str) -> Any:
    message = await ctx.loaders.message.load(message_id)
    if message is None:
        raise NotFound("message")
    return message


async def participant_of(ctx: Context, room_id: str, user_id: str,
                         at: datetime) -> ParticipantRecord:
    found = await ctx.loaders.membership.load((room_id, user_id))
    # Replaying an old join of someone who has left since: they joined as a member then.
    return found or ParticipantRecord(room_id=room_id, user_id=user_id,
                                      role=ParticipantRole.MEMBER, joined_at=at)


async def user_of(ctx: Context, user_id: str) -> UserRecord:
    user = await ctx.loaders.user.load(user_id)
    if user is None:
        raise NotFound("user")
    return user


async def join_request_of(ctx: Context, request_id: str) -> JoinRequestRecord:
    request = await ctx.loaders.join_request.load(request_id)
    if request is None:
        raise NotFound("join request")
    return request


async def room_of(ctx: Context, room_id: str) -> RoomRecord:
    room = await ctx.loaders.room.load(room_id)
    if room is None:
        raise NotFound("room")
    return room

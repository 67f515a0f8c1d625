"""Who is in a room: join (at once or by request), leave, invite, remove, roles."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from graph_db import join_requests, participants
from graph_db.models import (
    JoinRequestRecord,
    JoinRequestStatus,
    ParticipantRecord,
    ParticipantRole,
    RoomRecord,
)
from graph_db.participants import JoinOutcome
from resolvers import audit, policy, validation
from resolvers.access import (
    access_join_request,
    access_room,
    access_room_for,
    can_see_user,
    find_room,
)
from resolvers.context import Context
from resolvers.errors import BadInput, Conflict, Forbidden, NotFound

REQUEST_MESSAGE_MAX = 500


@dataclass(frozen=True, slots=True)
class JoinResult:
    joined: bool
    room: RoomRecord
    request: JoinRequestRecord | None


async def _room_for_join(ctx: Context, room_id: str) -> tuple[RoomRecord, bool]:
    """The room a caller may try to join, and whether they were invited. A PRIVATE room is
    not visible to outsiders, yet they may ask to join it by id (a link someone shared)."""
    viewer = ctx.viewer
    key = (room_id, viewer.id)
    standing = await ctx.loaders.standing.load(key) if 0 < len(room_id) <= 128 else None
    if standing is None:
        raise NotFound("room")
    ctx.loaders.membership.prime(key, standing.member)
    room, invited = standing.room, standing.invited
    if policy.join_mode(viewer.role, room, invited) is policy.JoinMode.DENIED:
        raise NotFound("room")
    return room, invited


async def join_room(ctx: Context, room_id: str, message: str | None) -> JoinResult:
    viewer = ctx.viewer
    room, invited = await _room_for_join(ctx, room_id)
    note = validation.optional_text("message", message, max_len=REQUEST_MESSAGE_MAX)
    if policy.join_mode(viewer.role, room, invited) is policy.JoinMode.REQUEST:
        if await ctx.loaders.membership.load((room_id, viewer.id)):
            return JoinResult(True, room, None)
        request, events = await join_requests.request_to_join(
            ctx.db, request_id=str(uuid.uuid4()), room_id=room_id, user_id=viewer.id,
            message=note)
        await ctx.announce(events)  # none when the request was already pending
        return JoinResult(False, room, request)
    outcome, events = await participants.join(ctx.db, room_id, viewer.id)
    await ctx.announce(events)
    _raise_for(outcome)
    return JoinResult(True, room, None)


def _raise_for(outcome: JoinOutcome) -> None:
    if outcome is JoinOutcome.GONE:
        raise NotFound("room")
    if outcome is JoinOutcome.FULL:
        raise Conflict("the room is full")


async def leave_room(ctx: Context, room_id: str) -> RoomRecord:
    found = await access_room(ctx, room_id)
    if found.member is None:
        raise Conflict("you are not a participant of this room")
    _, events = await participants.leave(ctx.db, room_id, found.viewer.id, revoke_invite=False,
                                       host_roles=policy.host_roles(found.room.type))
    await ctx.announce(events)
    return found.room


async def invite(ctx: Context, room_id: str, user_ids: list[str]) -> RoomRecord:
    found = await access_room_for(ctx, room_id, policy.can_manage, "invite people to")
    ids = validation.id_list("userIds", user_ids, max_items=100)
    if not ids:
        raise BadInput("userIds", "at least one id")
    for user in await ctx.loaders.user.load_many(ids):
        if user is None or not await can_see_user(ctx, user):
            raise BadInput("userIds", "unknown user")
    outcome, events = await participants.invite(ctx.db, room_id, ids)
    await ctx.announce(events)
    _raise_for(outcome)
    return found.room


async def _target(ctx: Context, room_id: str, user_id: str) -> ParticipantRecord:
    target = await ctx.loaders.membership.load((room_id, user_id))
    if target is None:
        raise NotFound("participant")
    return target


async def remove_participant(ctx: Context, room_id: str, user_id: str) -> RoomRecord:
    # Managers first: otherwise FORBIDDEN vs "participant not found" would tell anyone who
    # can see a PUBLIC room who is in it, which Room.participants hides from them.
    found = await access_room_for(ctx, room_id, policy.can_manage, "remove participants from")
    target = await _target(ctx, room_id, user_id)
    if not policy.can_remove(found.viewer.role, found.member, target):
        raise Forbidden("you may not remove this participant")
    # Removal also withdraws the invitation; otherwise the user could walk straight back in.
    _, events = await participants.leave(ctx.db, room_id, user_id, revoke_invite=True,
                                       host_roles=policy.host_roles(found.room.type))
    await ctx.announce(events)
    return found.room


async def set_participant_role(ctx: Context, room_id: str, user_id: str,
                               role: ParticipantRole) -> ParticipantRecord:
    found = await access_room_for(ctx, room_id, policy.can_assign_roles, "assign roles in")
    await _target(ctx, room_id, user_id)
    target = await ctx.loaders.user.load(user_id)
    if target is None or not policy.can_hold_role(target.role, found.room.type, role):
        raise BadInput("role", f"a {target.role.value if target else 'user'} cannot be "
                               f"{role.name.lower()} of a {found.room.type.name} room")
    current = await ctx.loaders.participants.load(room_id)
    hosts = [p.user_id for p in current if p.role is ParticipantRole.HOST]
    if hosts == [user_id] and role is not ParticipantRole.HOST:
        raise Conflict("a room needs a host: make someone else host first")
    updated, events = await participants.set_role(ctx.db, room_id, user_id, role,
                                                  policy.host_roles(found.room.type))
    await ctx.announce(events)
    if updated is None:
        raise NotFound("participant")
    return updated


async def decide_join_request(ctx: Context, request_id: str,
                              approve: bool) -> JoinRequestRecord:
    request, found = await access_join_request(ctx, request_id)
    (outcome, decided), events = await join_requests.decide(
        ctx.db, request, approve=approve, decided_by=found.viewer.id)
    await ctx.announce(events)
    if decided is not None:
        ctx.services.inbox.decided(decided, approve, found.viewer.id)
    if outcome is join_requests.DecideOutcome.FULL:
        raise Conflict("the room is full")
    if decided is None:
        raise Conflict(f"the request is already {request.status.name.lower()}")
    ctx.loaders.clear_all()
    return decided


async def join_requests_of(ctx: Context, room: RoomRecord,
                           status: JoinRequestStatus | None
                           ) -> list[JoinRequestRecord]:
    found = await find_room(ctx, room.id)
    allowed = found is not None and policy.can_manage(found.viewer.role, found.member)
    audit.read(ctx, "Room.joinRequests", room.id, allowed=allowed)
    if not allowed:
        # Hosts and moderators only; others see an empty list rather than an error, so a
        # listing that asks for it still renders.
        return []
    return await join_requests.requests_of_room(ctx.db, room.id, status)

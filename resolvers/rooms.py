"""Room queries and the room's own lifecycle: create, list, update, soft-delete."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from graph_db import pages, rooms
from graph_db.models import Role, RoomRecord, RoomType, RoomVisibility
from graph_db.rooms import RoomFilterArgs
from observability.metrics import ROOMS_CREATED
from resolvers import pagination, policy, validation
from resolvers.access import access_room_for, can_see_user, find_room
from resolvers.context import Context
from resolvers.errors import BadInput, Forbidden
from resolvers.pagination import Page

NAME_MAX = 120
DESCRIPTION_MAX = 2_000
SEARCH_MAX = 120
INVITES_MAX = 100


@dataclass(frozen=True, slots=True)
class RoomPage:
    """A page of rooms and the filter that chose them (totalCount counts with it)."""

    page: Page[RoomRecord]
    filter: RoomFilterArgs = field(repr=False)


async def room(ctx: Context, room_id: str) -> RoomRecord | None:
    found = await find_room(ctx, room_id)
    return found.room if found else None


async def list_rooms(ctx: Context, *, type: RoomType | None, visibility: RoomVisibility | None,
                     mine: bool, search: str | None, first: int | None,
                     after: str | None) -> RoomPage:
    viewer = ctx.viewer
    limit = pagination.page_size(first)
    filt = rooms.RoomFilterArgs(
        viewer_id=viewer.id, admin=viewer.role is Role.ADMIN,
        patient=viewer.role is Role.PATIENT, type=type, visibility=visibility,
        mine=mine, search=validation.optional_text("filter.search", search, max_len=SEARCH_MAX),
    )
    fp = pagination.fingerprint(viewer.id, filt.params())
    keys = pagination.decode("rooms", fp, after)
    cursor_keys = _room_keys(keys)
    listed = await pages.rooms_page(ctx.db, filt, after=cursor_keys, limit=limit + 1)
    page = pagination.forward([x.room for x in listed], limit, after,
                              lambda r: pagination.encode("rooms", fp, r.created_ms, r.id))
    loaders = ctx.loaders
    for x in listed:  # what a rooms list shows, read with the page
        loaders.room.prime(x.room.id, x.room)
        loaders.participant_count.prime(x.room.id, x.participant_count)
        if x.host is not None:
            loaders.user.prime(x.host.id, x.host)
    return RoomPage(page, filter=filt)


def _room_keys(keys: list[Any] | None) -> tuple[int, str] | None:
    if keys is None:
        return None
    if len(keys) != 2 or not isinstance(keys[0], int) or not isinstance(keys[1], str):
        raise BadInput("after", "malformed cursor")
    return keys[0], keys[1]


async def count_rooms(ctx: Context, page: RoomPage) -> int:
    return await rooms.count_rooms(ctx.db, page.filter)


async def create_room(ctx: Context, *, name: str, description: str | None, type: RoomType,
                      visibility: RoomVisibility, max_participants: int | None,
                      invite_user_ids: list[str] | None) -> RoomRecord:
    viewer = ctx.viewer
    if not policy.can_create_room(viewer.role, type):
        raise Forbidden(f"a {viewer.role.value} may not create {type.name} rooms")
    limit = ctx.settings.room_max_participants
    capacity = validation.int_range(
        "input.maxParticipants", limit if max_participants is None else max_participants,
        2, limit)
    invitees = [i for i in validation.id_list("input.inviteUserIds", invite_user_ids or [],
                                              max_items=INVITES_MAX) if i != viewer.id]
    if len(invitees) + 1 > capacity:
        raise BadInput("input.inviteUserIds", "more invitees than maxParticipants allows")
    await _check_invitees(ctx, invitees)
    room_id = str(uuid.uuid4())
    await rooms.create_room(
        ctx.db, room_id=room_id, host_id=viewer.id,
        name=validation.text("input.name", name, max_len=NAME_MAX),
        description=validation.optional_text("input.description", description,
                                             max_len=DESCRIPTION_MAX),
        type=type, visibility=visibility, max_participants=capacity, invite_ids=invitees,
    )
    ROOMS_CREATED.inc()  # committed (a creation has no room event to count it by)
    ctx.services.inbox.room_created(room_id, invitees, viewer.id)
    return await _reload(ctx, room_id)


async def _check_invitees(ctx: Context, user_ids: list[str]) -> None:
    found = await ctx.loaders.user.load_many(user_ids)
    for user in found:
        if user is None or not await can_see_user(ctx, user):
            raise BadInput("input.inviteUserIds", "unknown user")


async def _reload(ctx: Context, room_id: str) -> RoomRecord:
    ctx.loaders.clear_all()
    found = await find_room(ctx, room_id)
    assert found is not None
    return found.room


async def update_room(ctx: Context, room_id: str, changes: dict[str, Any]) -> RoomRecord:
    await access_room_for(ctx, room_id, policy.can_manage, "update")
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = validation.text("input.name", changes["name"] or "", max_len=NAME_MAX)
    if "description" in changes:
        values["description"] = validation.optional_text(
            "input.description", changes["description"], max_len=DESCRIPTION_MAX)
    if changes.get("visibility") is not None:
        values["visibility"] = changes["visibility"].value
    if changes.get("max_participants") is not None:
        values["maxParticipants"] = validation.int_range(
            "input.maxParticipants", changes["max_participants"], 2,
            ctx.settings.room_max_participants)
    outcome, events = await rooms.update_room(ctx.db, room_id, values)
    await ctx.announce(events)
    if isinstance(outcome, int):
        raise BadInput("input.maxParticipants",
                       f"below the current participant count ({outcome})")
    return await _reload(ctx, room_id)


async def delete_room(ctx: Context, room_id: str) -> str:
    found = await access_room_for(ctx, room_id, policy.can_delete, "delete")
    _, events = await rooms.soft_delete_room(ctx.db, room_id, found.viewer.id)
    await ctx.announce(events)
    return room_id

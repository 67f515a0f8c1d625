"""The caller's own notifications: a page, the unread count, marking read, the live stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from graph_db import digests
from graph_db import notifications as store
from graph_db.models import RoomRecord, from_ms
from graph_db.notifications import NotificationRecord
from resolvers import pagination, validation
from resolvers.access import find_room
from resolvers.context import Context
from resolvers.errors import BadInput, NotFound


async def page(ctx: Context, *, unread_only: bool, first: int | None,
               after: str | None) -> pagination.Page[NotificationRecord]:
    viewer = ctx.viewer
    limit = pagination.page_size(first)
    fp = pagination.fingerprint(viewer.id, unread_only)
    keys = _keys(pagination.decode("notifications", fp, after))
    found = await store.page(ctx.db, viewer.id, unread_only=unread_only, after=keys,
                             limit=limit + 1)
    return pagination.forward(found, limit, after, lambda n: pagination.encode(
        "notifications", fp, n.created_ms, n.id))


def _keys(keys: list[Any] | None) -> tuple[int, str] | None:
    if keys is None:
        return None
    if len(keys) != 2 or not isinstance(keys[0], int) or not isinstance(keys[1], str):
        raise BadInput("after", "malformed cursor")
    return keys[0], keys[1]


async def unread_count(ctx: Context) -> int:
    return await store.unread_count(ctx.db, ctx.viewer.id)


async def mark_read(ctx: Context, ids: list[str] | None) -> int:
    viewer = ctx.viewer
    if ids is not None:
        ids = validation.id_list("ids", ids, max_items=500)
    return await store.mark_read(ctx.db, viewer.id, ids)


async def room_of(ctx: Context, room_id: str | None) -> RoomRecord | None:
    """The room, while the caller may still see it."""
    if room_id is None:
        return None
    found = await find_room(ctx, room_id)
    return found.room if found else None


async def live(ctx: Context) -> AsyncGenerator[NotificationRecord, None]:
    user_id = ctx.viewer.id
    inbox = ctx.services.inbox
    queue = await inbox.live.open(user_id)
    try:
        while True:
            yield await queue.get()
    finally:
        await inbox.live.close(user_id, queue)


@dataclass(frozen=True, slots=True)
class Settings:
    email: str
    dnd_until: datetime | None
    rooms: dict[str, str]


async def settings(ctx: Context) -> Settings:
    email, dnd, rooms = await digests.settings_of(ctx.db, ctx.viewer.id)
    return Settings(email, from_ms(dnd), rooms)


async def update_settings(ctx: Context, *, email: str | None, dnd_until: datetime | None,
                          clear_dnd: bool, rooms: dict[str, str]) -> Settings:
    viewer = ctx.viewer
    if len(rooms) > 200:
        raise BadInput("input.rooms", "at most 200 rooms at once")
    if dnd_until is not None and dnd_until.tzinfo is None:
        raise BadInput("input.doNotDisturbUntil", "needs a time zone")
    dnd_ms = int(dnd_until.timestamp() * 1000) if dnd_until is not None else None
    if not await digests.update_settings(ctx.db, viewer.id, email=email, dnd_until=dnd_ms,
                                         clear_dnd=clear_dnd, rooms=rooms):
        raise NotFound("room")  # not a participant there: same answer as a missing room
    return await settings(ctx)

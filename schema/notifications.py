"""Notifications: the caller's own, in-app (email digests: notify/)."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Self

import strawberry
from strawberry.types import Info

from graph_db.notifications import NotificationRecord
from resolvers import notifications as resolve
from resolvers.audit import audited
from resolvers.context import Context
from resolvers.pagination import Page
from schema.common import PageInfo
from schema.rooms import Room

Ctx = Info[Context, None]


@strawberry.enum
class NotificationKind(enum.Enum):
    JOIN_REQUEST = "JOIN_REQUEST"
    JOIN_DECISION = "JOIN_DECISION"
    INVITATION = "INVITATION"
    MENTION = "MENTION"
    REPLY = "REPLY"
    ROOM_UPDATED = "ROOM_UPDATED"
    ASSISTANT = "ASSISTANT"
    FILE_SCANNED = "FILE_SCANNED"


@strawberry.type
class Notification:
    id: strawberry.ID
    kind: NotificationKind
    title: str
    body: str | None = strawberry.field(description="JOIN_DECISION: approved or declined.")
    created_at: datetime
    read_at: datetime | None
    ref_id: strawberry.ID | None = strawberry.field(
        description="The message (MENTION, REPLY), join request, file (FILE_SCANNED) or "
                    "assistant reply (ASSISTANT) it is about.")
    _record: strawberry.Private[NotificationRecord]

    @classmethod
    def of(cls, n: NotificationRecord) -> Self:
        return cls(id=strawberry.ID(n.id), kind=NotificationKind(n.kind), title=n.title,
                   body=n.body, created_at=n.created_at, read_at=n.read_at,
                   ref_id=strawberry.ID(n.ref_id) if n.ref_id else None, _record=n)

    @strawberry.field(description="Null once the caller may no longer see it.")
    async def room(self, info: Ctx) -> Room | None:
        found = await resolve.room_of(info.context, self._record.room_id)
        return Room.of(found) if found else None


@strawberry.type
class NotificationEdge:
    cursor: str
    node: Notification


@strawberry.type
class NotificationConnection:
    edges: list[NotificationEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page[NotificationRecord]) -> Self:
        return cls(edges=[NotificationEdge(cursor=c, node=Notification.of(n))
                          for n, c in zip(page.items, page.cursors, strict=True)],
                   page_info=PageInfo.of(page))

    @strawberry.field(description="All the caller's unread notifications, not just this page's.")
    async def unread_count(self, info: Ctx) -> int:
        return await resolve.unread_count(info.context)


@strawberry.type
class NotificationQuery:
    @strawberry.field(description="The caller's notifications, newest first.")
    async def notifications(self, info: Ctx, unread_only: bool | None = False,
                            first: int | None = 20,
                            after: str | None = None) -> NotificationConnection:
        return NotificationConnection.of(await resolve.page(
            info.context, unread_only=bool(unread_only), first=first, after=after))


@strawberry.type
class NotificationMutation:
    @strawberry.mutation(description="Marks these (null: all) read; how many were unread.",
                         extensions=audited("Notification"))
    async def mark_notifications_read(self, info: Ctx,
                                      ids: list[strawberry.ID] | None = None) -> int:
        return await resolve.mark_read(info.context, [str(i) for i in ids]
                                       if ids is not None else None)


@strawberry.type
class NotificationSubscription:
    @strawberry.subscription(description="The caller's new notifications, live.")
    async def notifications(self, info: Ctx) -> AsyncGenerator[Notification, None]:
        async for record in resolve.live(info.context):
            yield Notification.of(record)


@strawberry.enum(description="Which notifications also come by email (to the token's email "
                             "address), as a digest while you are not online.")
class EmailNotifications(enum.Enum):
    ALL = "ALL"
    MENTIONS = "MENTIONS"
    OFF = "OFF"


@strawberry.enum
class RoomNotifications(enum.Enum):
    ALL = "ALL"
    MENTIONS = "MENTIONS"
    MUTED = "MUTED"


@strawberry.type
class RoomNotificationSetting:
    level: RoomNotifications
    _room_id: strawberry.Private[str]

    @strawberry.field
    async def room(self, info: Ctx) -> Room | None:
        found = await resolve.room_of(info.context, self._room_id)
        return Room.of(found) if found else None


@strawberry.type
class NotificationSettings:
    email: EmailNotifications
    do_not_disturb_until: datetime | None = strawberry.field(
        description="No email before this (in-app notifications still arrive).")
    rooms: list[RoomNotificationSetting] = strawberry.field(
        description="Rooms not at ALL: MENTIONS (only mentions) or MUTED (nothing).")

    @classmethod
    def of(cls, found: resolve.Settings) -> Self:
        return cls(email=EmailNotifications(found.email), do_not_disturb_until=found.dnd_until,
                   rooms=[RoomNotificationSetting(level=RoomNotifications(level),
                                                  _room_id=room)
                          for room, level in sorted(found.rooms.items())])


@strawberry.input
class RoomNotificationInput:
    room_id: strawberry.ID
    level: RoomNotifications


@strawberry.input
class NotificationSettingsInput:
    email: EmailNotifications | None = None
    do_not_disturb_until: datetime | None = None
    clear_do_not_disturb: bool = False
    rooms: list[RoomNotificationInput] | None = None


@strawberry.type
class NotificationSettingsQuery:
    @strawberry.field
    async def notification_settings(self, info: Ctx) -> NotificationSettings:
        return NotificationSettings.of(await resolve.settings(info.context))


@strawberry.type
class NotificationSettingsMutation:
    @strawberry.mutation(extensions=audited("User"))
    async def update_notification_settings(self, info: Ctx, input: NotificationSettingsInput
                                           ) -> NotificationSettings:
        return NotificationSettings.of(await resolve.update_settings(
            info.context, email=input.email.value if input.email else None,
            dnd_until=input.do_not_disturb_until, clear_dnd=input.clear_do_not_disturb,
            rooms={str(r.room_id): r.level.value for r in input.rooms or []}))

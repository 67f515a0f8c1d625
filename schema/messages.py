"""Message, its edits, reactions, threads and attached files, and the chat operations."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Optional, Self

import strawberry
from strawberry.types import Info

from graph_db.messages import MessageEditRecord, MessageRecord
from resolvers import files, message_fields
from resolvers import messages as resolve
from resolvers.audit import audited
from resolvers.context import Context
from resolvers.maybe import MaybeAwaitable, then
from schema.common import PageInfo
from schema.rooms import Room
from schema.users import User

if TYPE_CHECKING:
    from schema.files import SharedFile

Ctx = Info[Context, None]


@strawberry.type
class MessageEdit:
    content: str
    edited_at: datetime

    @classmethod
    def of(cls, record: MessageEditRecord) -> Self:
        return cls(content=record.content, edited_at=record.edited_at)


@strawberry.type
class ReactionGroup:
    emoji: str
    count: int
    reacted_by_me: bool
    _user_ids: strawberry.Private[list[str]]

    @classmethod
    def of(cls, group: message_fields.ReactionGroup) -> Self:
        return cls(emoji=group.emoji, count=len(group.user_ids),
                   reacted_by_me=group.reacted_by_me, _user_ids=group.user_ids)

    @strawberry.field
    async def users(self, info: Ctx) -> list[User]:
        return [User.of(u) for u in await message_fields.users(info.context, self._user_ids)]


@strawberry.type
class Message:
    id: strawberry.ID
    content: str
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    seq: int = strawberry.field(
        description="Strictly increasing per room; the order every subscriber sees.")
    edits: list[MessageEdit]
    _record: strawberry.Private[MessageRecord]

    @classmethod
    def of(cls, m: MessageRecord) -> Self:
        return cls(id=strawberry.ID(m.id), content=m.content, created_at=m.created_at,
                   edited_at=m.edited_at, deleted=m.deleted, seq=m.seq,
                   edits=[MessageEdit.of(e) for e in m.edits], _record=m)

    @strawberry.field
    async def room(self, info: Ctx) -> Room:
        return Room.of(await message_fields.room(info.context, self._record))

    @strawberry.field(description="Files shared with this message (listed while they may be "
                                  "downloaded).")
    async def attachments(self, info: Ctx) -> list[Annotated[SharedFile, strawberry.lazy(
            "schema.files")]]:
        from schema.files import SharedFile

        return [SharedFile.of(f) for f in await files.attachments(info.context,
                                                                   self._record.id)]

    @strawberry.field(graphql_type=User)
    def author(self, info: Ctx) -> MaybeAwaitable[User]:
        return then(message_fields.author(info.context, self._record), User.of)

    @strawberry.field(graphql_type=Optional["Message"])
    def parent(self, info: Ctx) -> MaybeAwaitable[Message | None]:
        return then(message_fields.parent(info.context, self._record), _message_or_none)

    @strawberry.field(graphql_type=int)
    def reply_count(self, info: Ctx) -> MaybeAwaitable[int]:
        return message_fields.reply_count(info.context, self._record)

    @strawberry.field
    async def replies(self, info: Ctx, first: int | None = 50,
                      after: str | None = None) -> MessageConnection:
        page = await message_fields.replies(info.context, self._record, first, after)
        return MessageConnection.of(page)

    @strawberry.field(graphql_type=list[ReactionGroup])
    def reactions(self, info: Ctx) -> MaybeAwaitable[list[ReactionGroup]]:
        return then(message_fields.reactions(info.context, self._record),
                    lambda groups: [ReactionGroup.of(g) for g in groups])

    @strawberry.field
    async def mentions(self, info: Ctx) -> list[User]:
        return [User.of(u) for u in await message_fields.mentions(info.context, self._record)]


def _message_or_none(found: MessageRecord | None) -> Message | None:
    return Message.of(found) if found else None


@strawberry.type
class MessageEdge:
    cursor: str
    node: Message


@strawberry.type
class MessageConnection:
    edges: list[MessageEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: message_fields.MessagePage) -> Self:
        edges = [MessageEdge(cursor=c, node=Message.of(m))
                 for m, c in zip(page.items, page.cursors, strict=True)]
        info = PageInfo.of(page)
        return cls(edges=edges, page_info=info)


@strawberry.input
class SendMessageInput:
    content: str
    parent_id: strawberry.ID | None = strawberry.field(
        default=None, description="Reply in the thread of this message.")
    client_message_id: str | None = strawberry.field(
        default=None, description="Client-generated id; resending the same id returns the "
                                  "same message (idempotent).")
    attachment_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Your own files of this room, not yet attached (at most "
                                  "10).")


@strawberry.type
class MessageQuery:
    @strawberry.field(extensions=audited("Message", by="id", lookup=True))
    async def message(self, info: Ctx, id: strawberry.ID) -> Message | None:
        found = await message_fields.message(info.context, id)
        return Message.of(found) if found else None


@strawberry.type
class MessageMutation:
    @strawberry.mutation(extensions=audited("Message", room="room_id", created=True))
    async def send_message(self, info: Ctx, room_id: strawberry.ID,
                           input: SendMessageInput) -> Message:
        return Message.of(await resolve.send_message(
            info.context, room_id, content=input.content,
            parent_id=str(input.parent_id) if input.parent_id is not None else None,
            client_message_id=input.client_message_id,
            attachment_ids=[str(i) for i in input.attachment_ids or []]))

    @strawberry.mutation(extensions=audited("Message", by="id"))
    async def edit_message(self, info: Ctx, id: strawberry.ID, content: str) -> Message:
        return Message.of(await resolve.edit_message(info.context, id, content))

    @strawberry.mutation(extensions=audited("Message", by="id"))
    async def delete_message(self, info: Ctx, id: strawberry.ID) -> Message:
        return Message.of(await resolve.delete_message(info.context, id))

    @strawberry.mutation(extensions=audited("Message", by="message_id"))
    async def add_reaction(self, info: Ctx, message_id: strawberry.ID, emoji: str) -> Message:
        return Message.of(await resolve.add_reaction(info.context, message_id, emoji))

    @strawberry.mutation(extensions=audited("Message", by="message_id"))
    async def remove_reaction(self, info: Ctx, message_id: strawberry.ID,
                              emoji: str) -> Message:
        return Message.of(await resolve.remove_reaction(info.context, message_id, emoji))

    @strawberry.mutation(extensions=audited("Room", by="room_id"))
    async def mark_room_read(self, info: Ctx, room_id: strawberry.ID, up_to_seq: int) -> Room:
        return Room.of(await resolve.mark_room_read(info.context, room_id, up_to_seq))

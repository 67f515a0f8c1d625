"""Reading messages: one message, a room's page, a thread's page, and a message's fields.

Only participants read a room's messages; everyone else gets what a missing message gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graph_db import pages
from graph_db.messages import MessageRecord, ReactionRecord
from graph_db.models import RoomRecord, UserRecord
from resolvers import audit, maybe, pagination
from resolvers.access import RoomAccess, find_room
from resolvers.context import Context
from resolvers.errors import BadInput, NotFound
from resolvers.maybe import MaybeAwaitable
from resolvers.pagination import Page

ROOM_PAGE_DEFAULT = 50
REPLIES_PAGE_DEFAULT = 50


MessagePage = Page[MessageRecord]
EMPTY: MessagePage = Page([], [], has_next=False, has_previous=False)


@dataclass(frozen=True, slots=True)
class ReactionGroup:
    emoji: str
    user_ids: list[str]
    reacted_by_me: bool


async def access_message(ctx: Context, message_id: str) -> tuple[MessageRecord, RoomAccess]:
    """A message of a room the caller participates in; NOT_FOUND otherwise."""
    plausible = 0 < len(message_id) <= 128
    message = await ctx.loaders.message.load(message_id) if plausible else None
    found = await find_room(ctx, message.room_id) if message else None
    if message is None or found is None or found.member is None:
        raise NotFound("message")
    return message, found


async def message(ctx: Context, message_id: str) -> MessageRecord | None:
    try:
        found, _ = await access_message(ctx, message_id)
    except NotFound:
        return None
    return found


def _seq_key(keys: list[Any] | None, field: str) -> int | None:
    if keys is None:
        return None
    if len(keys) != 1 or not isinstance(keys[0], int):
        raise BadInput(field, "malformed cursor")
    return keys[0]


async def room_messages(ctx: Context, room: RoomRecord, last: int | None,
                        before: str | None) -> MessagePage:
    """Top-level messages, newest last, paged backwards; empty for non-participants (a
    PUBLIC room's visitors see that it exists, not what is said in it)."""
    limit = pagination.page_size(last, "last", ROOM_PAGE_DEFAULT)
    fp = pagination.fingerprint(room.id)
    before_seq = _seq_key(pagination.decode("messages", fp, before, "before"), "before")
    member = await ctx.loaders.membership.load((room.id, ctx.viewer.id))
    audit.read(ctx, "Room.messages", room.id, allowed=member is not None)
    if member is None:
        return EMPTY
    listed = await pages.messages_page(ctx.db, room.id, before_seq=before_seq,
                                       limit=limit + 1)
    found = [x.message for x in listed]
    page = found[-limit:]
    _prime(ctx, page)
    loaders = ctx.loaders
    for x in listed:  # what a message list shows, read with the page
        loaders.reactions.prime(x.message.id, x.reactions)
        loaders.reply_count.prime(x.message.id, x.reply_count)
        if x.author is not None:
            loaders.user.prime(x.author.id, x.author)
    # Paged backwards: the extra row is an older one.
    return Page(page, [pagination.encode("messages", fp, m.seq) for m in page],
                has_next=before is not None, has_previous=len(found) > limit)


async def replies(ctx: Context, root: MessageRecord, first: int | None,
                  after: str | None) -> MessagePage:
    """The thread of a message, oldest first (the caller already reads its room)."""
    limit = pagination.page_size(first, "first", REPLIES_PAGE_DEFAULT)
    fp = pagination.fingerprint(root.id)
    after_seq = _seq_key(pagination.decode("replies", fp, after), "after")
    audit.read(ctx, "Message.replies", root.room_id)
    found = await ctx.loaders.replies.load((root.id, after_seq, limit + 1))
    page = pagination.forward(found, limit, after,
                              lambda m: pagination.encode("replies", fp, m.seq))
    _prime(ctx, page.items)
    return page


def _prime(ctx: Context, page: list[MessageRecord]) -> None:
    # A reply's `parent` is often on the same page: no second lookup for it.
    for m in page:
        ctx.loaders.message.prime(m.id, m)


def author(ctx: Context, m: MessageRecord) -> MaybeAwaitable[UserRecord]:
    return maybe.then(maybe.load(ctx.loaders.user, m.author_id), _existing_user)


def _existing_user(user: UserRecord | None) -> UserRecord:
    assert user is not None, "a message's author is a user node"
    return user


async def room(ctx: Context, m: MessageRecord) -> RoomRecord:
    found = await ctx.loaders.room.load(m.room_id)
    if found is None:  # deleted while the operation ran
        raise NotFound("room")
    return found


def parent(ctx: Context, m: MessageRecord) -> MaybeAwaitable[MessageRecord | None]:
    return maybe.load(ctx.loaders.message, m.parent_id) if m.parent_id else None


def reply_count(ctx: Context, m: MessageRecord) -> MaybeAwaitable[int]:
    return maybe.load(ctx.loaders.reply_count, m.id)


def reactions(ctx: Context, m: MessageRecord) -> MaybeAwaitable[list[ReactionGroup]]:
    """Grouped by emoji, in the order each emoji was first used."""
    if m.deleted:
        return []
    me = ctx.viewer.id

    def grouped(found: list[ReactionRecord]) -> list[ReactionGroup]:
        groups: dict[str, list[str]] = {}
        for r in found:
            groups.setdefault(r.emoji, []).append(r.user_id)
        return [ReactionGroup(emoji, ids, me in ids) for emoji, ids in groups.items()]

    return maybe.then(maybe.load(ctx.loaders.reactions, m.id), grouped)


async def users(ctx: Context, user_ids: list[str] | tuple[str, ...]) -> list[UserRecord]:
    found = await ctx.loaders.user.load_many(list(user_ids))
    return [u for u in found if u is not None]


async def mentions(ctx: Context, m: MessageRecord) -> list[UserRecord]:
    return await users(ctx, m.mention_ids)


async def unread_count(ctx: Context, room: RoomRecord) -> int:
    return await ctx.loaders.unread_count.load((room.id, ctx.viewer.id))

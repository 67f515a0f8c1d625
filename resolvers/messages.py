"""Chat writes: send (idempotent, threaded, with mentions), edit, soft delete, reactions, and
the caller's read mark. Each durable change is announced after its transaction commits."""

from __future__ import annotations

import re
import uuid

from graph_db import messages
from graph_db.messages import Change, MessageRecord, NewMessage, Outcome
from graph_db.models import RoomRecord
from resolvers import files, policy, validation
from resolvers.access import RoomAccess, access_room
from resolvers.context import Context
from resolvers.errors import BadInput, Conflict, Forbidden, NotFound
from resolvers.message_fields import access_message

CONTENT_MAX = 10_000
CLIENT_ID_MAX = 128
MENTIONS_MAX = 50
# `<@USER_ID>` names a user by id, so a mention survives display-name changes; clients
# render the user's current name.
MENTION = re.compile(r"<@([^<>\s]{1,128})>")


def mention_ids(content: str) -> list[str]:
    return list(dict.fromkeys(MENTION.findall(content)))[:MENTIONS_MAX]


def _client_id(value: str | None) -> str | None:
    # Kept exactly as sent (no trimming): it is the client's own key.
    if value is not None and not 0 < len(value) <= CLIENT_ID_MAX:
        raise BadInput("input.clientMessageId", f"must be 1 to {CLIENT_ID_MAX} characters")
    return value


async def _participant(ctx: Context, room_id: str) -> RoomAccess:
    """NOT_FOUND when the room is invisible, FORBIDDEN when visible but not joined."""
    found = await access_room(ctx, room_id)
    if found.member is None:
        raise Forbidden("only participants take part in this room's chat")
    return found


async def _thread_root(ctx: Context, room_id: str, parent_id: str | None) -> str | None:
    """The root of the thread a reply joins: a reply to a reply lands in the root's thread."""
    if parent_id is None:
        return None
    parent = await ctx.loaders.message.load(parent_id) if 0 < len(parent_id) <= 128 else None
    if parent is None or parent.room_id != room_id:
        raise BadInput("input.parentId", "not a message of this room")
    return parent.root_id or parent.id


async def send_message(ctx: Context, room_id: str, *, content: str, parent_id: str | None,
                       client_message_id: str | None,
                       attachment_ids: list[str] | None = None) -> MessageRecord:
    text = validation.text("input.content", content, max_len=CONTENT_MAX)
    client_id = _client_id(client_message_id)
    viewer = ctx.viewer
    if parent_id is not None or not 0 < len(room_id) <= 128:
        await _participant(ctx, room_id)  # before reading the parent's thread
    root_id = await _thread_root(ctx, room_id, parent_id)
    if attachment_ids:
        await _participant(ctx, room_id)
        attachment_ids = await files.check_attachable(ctx, room_id, attachment_ids)
    # The write checks membership itself; only a refusal pays for the full access check,
    # which then says NOT_FOUND or FORBIDDEN.
    sent = await ctx.services.sends.send(NewMessage(
        id=str(uuid.uuid4()), room_id=room_id, author_id=viewer.id, content=text,
        parent_id=parent_id, root_id=root_id,
        client_message_id=client_id, mention_ids=mention_ids(text)))
    if sent is None:
        ctx.loaders.clear_all()
        await _participant(ctx, room_id)
        raise Conflict("you left the room while sending")
    if attachment_ids and sent.event is not None:
        await files.attach(ctx, room_id, sent.message.id, attachment_ids)
    if sent.event is not None:
        await ctx.services.hub.publish(sent.event, hints=(sent.message, viewer.user))
        ctx.services.inbox.message_posted(sent.message, sent.event)
        # The post ends the author's typing (room stream): the next start must not be
        # swallowed as a "refresh" by set_typing's rate limit.
        ctx.services.typing.forget(room_id, viewer.id)
    ctx.loaders.clear_all()
    return sent.message


async def _finish(ctx: Context, change: Change) -> MessageRecord:
    """Announces a committed change; an unchanged message is returned as it is."""
    if change.outcome is Outcome.MISSING or change.message is None:
        raise NotFound("message")
    if change.outcome is Outcome.DELETED:
        raise Conflict("the message was deleted")
    if change.event is not None:
        await ctx.services.hub.publish(change.event, hints=(change.message,))
    ctx.loaders.clear_all()
    return change.message


async def _live_message(ctx: Context, message_id: str) -> tuple[MessageRecord, RoomAccess]:
    message, found = await access_message(ctx, message_id)
    if message.deleted:
        raise Conflict("the message was deleted")
    return message, found


async def edit_message(ctx: Context, message_id: str, content: str) -> MessageRecord:
    text = validation.text("content", content, max_len=CONTENT_MAX)
    message, found = await access_message(ctx, message_id)
    if message.author_id != found.viewer.id:
        raise Forbidden("only the author may edit a message")
    if message.deleted:
        raise Conflict("the message was deleted")
    return await _finish(ctx, await messages.edit_message(ctx.db, message, text,
                                                          mention_ids(text)))


async def delete_message(ctx: Context, message_id: str) -> MessageRecord:
    """Authors delete their own messages; hosts, moderators and admins in the room anyone's.
    Deleting again returns the deleted message (no second event)."""
    message, found = await access_message(ctx, message_id)
    viewer = found.viewer
    if message.author_id != viewer.id and not policy.can_manage(viewer.role, found.member):
        raise Forbidden("you may not delete this message")
    if message.deleted:
        return message
    change = await messages.delete_message(ctx.db, message, viewer.id)
    if change.outcome is Outcome.DELETED and change.message is not None:
        ctx.loaders.clear_all()
        return change.message  # someone deleted it concurrently: the same end state
    return await _finish(ctx, change)


async def add_reaction(ctx: Context, message_id: str, emoji: str) -> MessageRecord:
    symbol = valid_emoji(emoji)
    message, found = await _live_message(ctx, message_id)
    return await _finish(ctx, await messages.add_reaction(ctx.db, message, found.viewer.id,
                                                          symbol))


async def remove_reaction(ctx: Context, message_id: str, emoji: str) -> MessageRecord:
    symbol = valid_emoji(emoji)
    message, found = await _live_message(ctx, message_id)
    return await _finish(ctx, await messages.remove_reaction(ctx.db, message, found.viewer.id,
                                                             symbol))


async def mark_room_read(ctx: Context, room_id: str, up_to_seq: int) -> RoomRecord:
    if up_to_seq < 0:
        raise BadInput("upToSeq", "must not be negative")
    found = await _participant(ctx, room_id)
    if await messages.mark_read(ctx.db, room_id, found.viewer.id, up_to_seq) is None:
        raise NotFound("room")  # left or closed while this ran
    ctx.loaders.clear_all()
    return found.room


# --- emoji ------------------------------------------------------------------------------------
# One emoji grapheme per UTS #51: a pictograph (with an optional variation selector, skin-tone
# modifier and tag sequence), a regional-indicator flag or a keycap; elements joined by ZWJ.

EMOJI_MAX_CODE_POINTS = 32
_ZWJ, _VS15, _VS16, _KEYCAP, _CANCEL_TAG = 0x200D, 0xFE0E, 0xFE0F, 0x20E3, 0xE007F
_MODIFIERS = range(0x1F3FB, 0x1F400)
_REGIONAL = range(0x1F1E6, 0x1F200)
_TAGS = range(0xE0020, 0xE007F)
_KEYCAP_BASES = frozenset(map(ord, "0123456789#*"))
# Extended_Pictographic (Unicode emoji-data.txt); the unassigned code points it reserves for
# future emoji are included, so new emoji work before this table is updated.
_PICTOGRAPHIC = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122),
    (0x2139, 0x2139), (0x2194, 0x2199), (0x21A9, 0x21AA), (0x231A, 0x231B), (0x2328, 0x2328),
    (0x2388, 0x2388), (0x23CF, 0x23CF), (0x23E9, 0x23F3), (0x23F8, 0x23FA), (0x24C2, 0x24C2),
    (0x25AA, 0x25AB), (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE), (0x2600, 0x2605),
    (0x2607, 0x2612), (0x2614, 0x2685), (0x2690, 0x2705), (0x2708, 0x2712), (0x2714, 0x2714),
    (0x2716, 0x2716), (0x271D, 0x271D), (0x2721, 0x2721), (0x2728, 0x2728), (0x2733, 0x2734),
    (0x2744, 0x2744), (0x2747, 0x2747), (0x274C, 0x274C), (0x274E, 0x274E), (0x2753, 0x2755),
    (0x2757, 0x2757), (0x2763, 0x2767), (0x2795, 0x2797), (0x27A1, 0x27A1), (0x27B0, 0x27B0),
    (0x27BF, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B07), (0x2B1B, 0x2B1C), (0x2B50, 0x2B50),
    (0x2B55, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D), (0x3297, 0x3297), (0x3299, 0x3299),
    (0x1F000, 0x1F0FF), (0x1F10D, 0x1F10F), (0x1F12F, 0x1F12F), (0x1F16C, 0x1F171),
    (0x1F17E, 0x1F17F), (0x1F18E, 0x1F18E), (0x1F191, 0x1F19A), (0x1F1AD, 0x1F1E5),
    (0x1F201, 0x1F20F), (0x1F21A, 0x1F21A), (0x1F22F, 0x1F22F), (0x1F232, 0x1F23A),
    (0x1F23C, 0x1F23F), (0x1F249, 0x1F3FA), (0x1F400, 0x1F53D), (0x1F546, 0x1F64F),
    (0x1F680, 0x1F6FF), (0x1F774, 0x1F77F), (0x1F7D5, 0x1F7FF), (0x1F80C, 0x1F80F),
    (0x1F848, 0x1F84F), (0x1F85A, 0x1F85F), (0x1F888, 0x1F88F), (0x1F8AE, 0x1F8FF),
    (0x1F90C, 0x1F93A), (0x1F93C, 0x1F945), (0x1F947, 0x1FAFF), (0x1FC00, 0x1FFFD),
)


def _pictographic(cp: int) -> bool:
    return any(low <= cp <= high for low, high in _PICTOGRAPHIC)


def _element_end(cps: list[int], i: int) -> int:
    """Where the emoji element starting at `i` ends, or -1 when none starts there."""

    def at(j: int) -> int:
        return cps[j] if j < len(cps) else -1

    cp = at(i)
    if cp in _REGIONAL:
        return i + 2 if at(i + 1) in _REGIONAL else -1
    if cp in _KEYCAP_BASES:
        j = i + 2 if at(i + 1) == _VS16 else i + 1
        return j + 1 if at(j) == _KEYCAP else -1
    if cp < 0 or not _pictographic(cp):
        return -1
    j = i + 1
    j += at(j) in (_VS15, _VS16)
    j += at(j) in _MODIFIERS
    if at(j) in _TAGS:  # subdivision flags: black flag + tag letters + cancel tag
        while at(j) in _TAGS:
            j += 1
        return j + 1 if at(j) == _CANCEL_TAG else -1
    return j


def valid_emoji(value: str) -> str:
    cps = [ord(c) for c in value]
    ok = 0 < len(cps) <= EMOJI_MAX_CODE_POINTS
    i = 0
    while ok:
        i = _element_end(cps, i)
        if i < 0 or i == len(cps):
            ok = i == len(cps)
            break
        ok = cps[i] == _ZWJ
        i += 1
    if not ok:
        raise BadInput("emoji", "must be a single emoji")
    return value

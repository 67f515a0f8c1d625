"""The assistant (README "Assistant"): ask, cancel, read replies, turn it off per room.
Parse → access check → assistant/ or graph_db → return.

The context is read through the caller's own access path (`Room.messages`): what they could
page through themselves, deleted messages out, nothing of another room."""

from __future__ import annotations

from assistant.firewall import Person
from assistant.prompt import Item
from assistant.service import Assistant, Question, Refused
from graph_db import assistant as store
from graph_db import rooms
from graph_db.assistant import ReplyRecord
from graph_db.messages import MessageRecord
from graph_db.models import RoomRecord
from resolvers import message_fields, pagination, policy, validation
from resolvers.access import (
    MAX_ID_LENGTH,
    RoomAccess,
    access_room,
    access_room_for,
    find_room,
)
from resolvers.context import Context
from resolvers.errors import (
    AI_ERRORS,
    AIDisabled,
    AINotConfigured,
    Forbidden,
    NotFound,
    ServiceError,
)

PROMPT_MAX = 4_000
RECENT_REPLIES = 20


def _service(ctx: Context) -> Assistant:
    """The assistant, when on and configured for this deployment."""
    settings = ctx.settings
    if not settings.enable_ai_assistant:
        raise AIDisabled("the assistant is turned off on this server (ENABLE_AI_ASSISTANT)",
                         scope="server")
    assistant = ctx.services.assistant
    if assistant is None or assistant.backend is None:
        raise AINotConfigured("the assistant is on but has no model access configured: "
                              "GEMINI_API_KEY, or AI_BACKEND=vertex with GOOGLE_CLOUD_PROJECT")
    return assistant


def _refusal(refused: Refused) -> ServiceError:
    if refused.code == "NOT_FOUND":
        return NotFound("room")
    return AI_ERRORS[refused.code](str(refused), **refused.extensions)


async def ask(ctx: Context, room_id: str, prompt: str) -> ReplyRecord:
    assistant = _service(ctx)
    text = validation.text("prompt", prompt, max_len=PROMPT_MAX)
    found = await access_room(ctx, room_id)
    if found.member is None:  # a visitor of a PUBLIC room, an admin moderating it
        raise Forbidden("only participants ask the assistant in a room")
    allowed = ctx.settings.ai_allowed_roles
    if found.viewer.role.value not in allowed:
        raise Forbidden(f"the assistant answers {', '.join(allowed)} (AI_ALLOWED_ROLES)")
    if not found.room.assistant_enabled:
        raise AIDisabled("the room's hosts turned the assistant off", scope="room")
    try:
        assistant.check_model()
        items, people = await _context(ctx, found)
        return await assistant.ask(Question(
            room_id=found.room.id, asker_id=found.viewer.id,
            asker_role=found.viewer.role.value, prompt=text, items=items, people=people,
            request_id=ctx.request_id))
    except Refused as refused:
        raise _refusal(refused) from None


async def _context(ctx: Context, found: RoomAccess) -> tuple[list[Item], list[Person]]:
    """The last CHAT_HISTORY_LIMIT messages (as the caller pages them) and the earlier
    answers among them; everyone the service knows in them, for the firewall."""
    messages = await _recent_messages(ctx, found.room, ctx.settings.chat_history_limit)
    since = int(messages[0].created_at.timestamp() * 1000) if messages else None
    answers = await store.recent(ctx.db, found.room.id, limit=RECENT_REPLIES, since_ms=since,
                                 done_only=True)
    participants = await ctx.loaders.participants.load(found.room.id)
    user_ids = {p.user_id for p in participants} | {m.author_id for m in messages}
    user_ids |= {u for m in messages for u in m.mention_ids} | {a.asked_by for a in answers}
    users = {u.id: u for u in await ctx.loaders.user.load_many(sorted(user_ids)) if u}
    people = [Person(u.id, u.display_name, u.email) for u in users.values()]
    timeline: list[tuple[int, Item]] = []
    for m in messages:
        author = users.get(m.author_id)
        role = author.role.value if author else "participant"
        timeline.append((int(m.created_at.timestamp() * 1000),
                         Item(m.id, m.author_id, role, m.content)))
    for a in answers:
        if a.status in (store.COMPLETE,) and a.text:
            timeline.append((a.finished_ms or a.created_ms, Item(a.id, "", "", a.text,
                                                                 answer=True)))
    timeline.sort(key=lambda pair: pair[0])
    return [item for _, item in timeline], people


async def _recent_messages(ctx: Context, room: RoomRecord, limit: int) -> list[MessageRecord]:
    """Newest `limit` messages, oldest first, paged like the caller's own Room.messages."""
    found: list[MessageRecord] = []
    before: str | None = None
    while len(found) < limit:
        page = await message_fields.room_messages(
            ctx, room, min(pagination.MAX_PAGE, limit - len(found)), before)
        found[:0] = [m for m in page.items if not m.deleted]
        if not page.has_previous or not page.cursors:
            break
        before = page.cursors[0]
    return found[-limit:]


async def access_reply(ctx: Context, reply_id: str) -> tuple[ReplyRecord, RoomAccess]:
    """A reply of a room the caller participates in; missing or not theirs: NOT_FOUND."""
    reply: ReplyRecord | None = (await ctx.loaders.assistant_reply.load(reply_id)
                                 if 0 < len(reply_id) <= MAX_ID_LENGTH else None)
    found = await find_room(ctx, reply.room_id) if reply else None
    if reply is None or found is None or not policy.can_see_inside(found.viewer.role,
                                                                    found.member):
        raise NotFound("assistant reply")
    return reply, found


async def cancel(ctx: Context, reply_id: str) -> ReplyRecord:
    reply, found = await access_reply(ctx, reply_id)
    if reply.asked_by != found.viewer.id and not policy.can_manage(found.viewer.role,
                                                                    found.member):
        raise Forbidden("only its asker, a host or a moderator cancels an answer")
    if reply.done or ctx.services.assistant is None:
        return reply
    await ctx.services.assistant.cancel(reply.id)
    ctx.loaders.assistant_reply.clear(reply.id)
    found_reply: ReplyRecord = await ctx.loaders.assistant_reply.load(reply.id)
    return found_reply


async def reply_of(ctx: Context, reply_id: str) -> ReplyRecord:
    reply, _ = await access_reply(ctx, reply_id)
    return reply


async def room_replies(ctx: Context, room: RoomRecord, last: int | None) -> list[ReplyRecord]:
    """Newest last; participants only (others: empty)."""
    limit = pagination.page_size(last, "last", RECENT_REPLIES)
    member = await ctx.loaders.membership.load((room.id, ctx.viewer.id))
    if not policy.can_see_inside(ctx.viewer.role, member):
        return []
    return await store.recent(ctx.db, room.id, limit=limit)


async def set_room_assistant(ctx: Context, room_id: str, enabled: bool) -> RoomRecord:
    """Hosts (and admins) turn the assistant on or off for their room."""
    await access_room_for(ctx, room_id, policy.can_delete, "turn the assistant of")
    outcome, events = await rooms.update_room(ctx.db, room_id, {"assistantEnabled": enabled})
    await ctx.announce(events)
    if not isinstance(outcome, RoomRecord):
        raise NotFound("room")
    return outcome


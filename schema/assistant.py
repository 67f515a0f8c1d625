"""The assistant's replies in a room (README "Assistant")."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Self

import strawberry
from strawberry.types import Info

from graph_db.assistant import ReplyRecord
from resolvers import assistant as resolve
from resolvers import room_events
from resolvers.audit import audited
from resolvers.context import Context
from schema.rooms import Room
from schema.users import User

Ctx = Info[Context, None]


@strawberry.enum(description="STREAMING until the answer ends; then how it ended.")
class AssistantReplyStatus(enum.Enum):
    STREAMING = "STREAMING"
    COMPLETE = "COMPLETE"
    BLOCKED = "BLOCKED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


@strawberry.type
class AssistantUsage:
    input_tokens: int | None
    output_tokens: int | None


@strawberry.type(description="Why an accepted question got no (full) answer.")
class AssistantError:
    code: str = strawberry.field(description="AI_UPSTREAM_ERROR, AI_UPSTREAM_TIMEOUT, "
                                             "AI_UPSTREAM_RATE_LIMITED, AI_UPSTREAM_REJECTED, "
                                             "AI_MODEL_UNAVAILABLE or AI_PHI_BLOCKED (README)")
    message: str


_ERROR_MESSAGES = {
    "AI_UPSTREAM_ERROR": "the model's service failed; ask again shortly",
    "AI_UPSTREAM_TIMEOUT": "the model did not answer in time; ask again shortly",
    "AI_UPSTREAM_RATE_LIMITED": "the model's service is busy; ask again later",
    "AI_UPSTREAM_REJECTED": "the model's service refused the request",
    "AI_MODEL_UNAVAILABLE": "the configured model is not available (AI_MODEL_NAME)",
    "AI_PHI_BLOCKED": "the request held identifiers the firewall could not replace; nothing "
                      "was sent",
}


@strawberry.type(description="The assistant's answer to a participant's question, shown to "
                             "the room. Streams as AssistantReplyUpdated events (cumulative "
                             "text), then one final event with done: true.")
class AssistantReply:
    id: strawberry.ID
    prompt: str
    text: str = strawberry.field(description="Cumulative; citations appear as [m:<id>].")
    done: bool
    model: str
    created_at: datetime
    status: AssistantReplyStatus
    truncated: bool = strawberry.field(description="The answer hit the output token limit.")
    finish_reason: str | None = strawberry.field(description="The model's: STOP, MAX_TOKENS, "
                                                             "SAFETY, ...")
    citations: list[strawberry.ID] = strawberry.field(description=(
        "Messages the answer cites, only among those it was sent (an invented id is dropped)."))
    usage: AssistantUsage | None
    finished_at: datetime | None
    _record: strawberry.Private[ReplyRecord]

    @classmethod
    def of(cls, r: ReplyRecord) -> Self:
        usage = (AssistantUsage(input_tokens=r.tokens_in, output_tokens=r.tokens_out)
                 if r.done else None)
        return cls(id=strawberry.ID(r.id), prompt=r.prompt, text=r.text, done=r.done,
                   model=r.model, created_at=r.created_at,
                   status=AssistantReplyStatus(r.status), truncated=r.truncated,
                   finish_reason=r.finish_reason,
                   citations=[strawberry.ID(c) for c in r.citations], usage=usage,
                   finished_at=r.finished_at, _record=r)

    @classmethod
    def of_data(cls, data: dict[str, Any]) -> Self:
        """From a streaming snapshot (an ephemeral event)."""
        return cls.of(ReplyRecord.from_row(data))

    @strawberry.field
    async def room(self, info: Ctx) -> Room:
        return Room.of(await room_events.room_of(info.context, self._record.room_id))

    @strawberry.field
    async def asked_by(self, info: Ctx) -> User:
        return User.of(await room_events.user_of(info.context, self._record.asked_by))

    @strawberry.field
    def error(self) -> AssistantError | None:
        code = self._record.error_code
        message = _ERROR_MESSAGES.get(code or "")
        return AssistantError(code=code, message=message) if code and message else None


@strawberry.type
class AssistantQuery:
    @strawberry.field(description="A reply of a room the caller participates in.",
                      extensions=audited("AssistantReply", by="id", lookup=True))
    async def assistant_reply(self, info: Ctx, id: strawberry.ID) -> AssistantReply:
        return AssistantReply.of(await resolve.reply_of(info.context, id))


@strawberry.type
class AssistantMutation:
    @strawberry.mutation(description=(
        "Participants (AI_ALLOWED_ROLES) ask about the room's recent discussion. Returns at "
        "once with done: false; the answer streams on roomEvents as AssistantReplyUpdated."),
        extensions=audited("AssistantReply", room="room_id", created=True))
    async def ask_assistant(self, info: Ctx, room_id: strawberry.ID,
                            prompt: str) -> AssistantReply:
        return AssistantReply.of(await resolve.ask(info.context, room_id, prompt))

    @strawberry.mutation(description="Stops an answer (its asker, a host or a moderator); "
                                     "the text so far stays, status CANCELLED.",
                         extensions=audited("AssistantReply", by="id"))
    async def cancel_assistant_reply(self, info: Ctx, id: strawberry.ID) -> AssistantReply:
        return AssistantReply.of(await resolve.cancel(info.context, id))

    @strawberry.mutation(description="The room's hosts turn the assistant on or off for it.",
                         extensions=audited("Room", by="room_id"))
    async def set_room_assistant(self, info: Ctx, room_id: strawberry.ID,
                                 enabled: bool) -> Room:
        return Room.of(await resolve.set_room_assistant(info.context, room_id, enabled))

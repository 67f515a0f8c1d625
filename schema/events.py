"""The room event stream: one interface, one type per kind of event."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.types import Info

from resolvers import assistant, files
from resolvers import room_events as resolve
from resolvers.context import Context
from schema.calls import CallParticipant, CallRecording, ScreenShare
from schema.rooms import JoinRequest, Participant, Room
from schema.users import User

if TYPE_CHECKING:
    from schema.assistant import AssistantReply
    from schema.files import SharedFile
    from schema.messages import Message

Ctx = Info[Context, None]
MessageRef = Annotated["Message", strawberry.lazy("schema.messages")]


@strawberry.interface(description="Everything that happens in a room, in one ordered stream.")
class RoomEvent:
    room_id: strawberry.ID
    cursor: str = strawberry.field(description="Opaque; pass it as roomEvents(after:) to "
                                               "resume after a reconnect.")
    at: datetime
    durable: bool = strawberry.field(default=True, description=(
        "Stored, with a cursor of its own: replayed after `after`, a duplicate if its cursor "
        "was seen. False: ephemeral (typing, presence, calls, an assistant's answer while it "
        "streams), never replayed, carrying the cursor of the last durable event."))
    _ref: strawberry.Private[str | None] = None


async def _message(info: Ctx, event: RoomEvent) -> Message:
    from schema.messages import Message

    return Message.of(await resolve.message_of(info.context, event._ref or ""))


@strawberry.type
class MessagePosted(RoomEvent):
    @strawberry.field
    async def message(self, info: Ctx) -> MessageRef:
        return await _message(info, self)


@strawberry.type
class MessageEdited(RoomEvent):
    @strawberry.field
    async def message(self, info: Ctx) -> MessageRef:
        return await _message(info, self)


@strawberry.type
class MessageDeleted(RoomEvent):
    @strawberry.field
    async def message(self, info: Ctx) -> MessageRef:
        return await _message(info, self)


@strawberry.type
class ReactionsChanged(RoomEvent):
    @strawberry.field
    async def message(self, info: Ctx) -> MessageRef:
        return await _message(info, self)


@strawberry.type
class ParticipantJoined(RoomEvent):
    @strawberry.field
    async def participant(self, info: Ctx) -> Participant:
        return Participant.of(await resolve.participant_of(info.context, self.room_id,
                                                           self._ref or "", self.at))


@strawberry.type(description="A participant became host, moderator or member.")
class ParticipantRoleChanged(RoomEvent):
    @strawberry.field
    async def participant(self, info: Ctx) -> Participant:
        return Participant.of(await resolve.participant_of(info.context, self.room_id,
                                                           self._ref or "", self.at))


@strawberry.type
class ParticipantLeft(RoomEvent):
    @strawberry.field
    async def user(self, info: Ctx) -> User:
        return User.of(await resolve.user_of(info.context, self._ref or ""))


@strawberry.type
class TypingChanged(RoomEvent):
    typing: bool

    @strawberry.field
    async def user(self, info: Ctx) -> User:
        return User.of(await resolve.user_of(info.context, self._ref or ""))


@strawberry.type
class PresenceChanged(RoomEvent):
    online: bool

    @strawberry.field
    async def user(self, info: Ctx) -> User:
        return User.of(await resolve.user_of(info.context, self._ref or ""))


@strawberry.type
class JoinRequested(RoomEvent):
    @strawberry.field
    async def request(self, info: Ctx) -> JoinRequest:
        return JoinRequest.of(await resolve.join_request_of(info.context, self._ref or ""))


@strawberry.type
class RoomUpdated(RoomEvent):
    @strawberry.field
    async def room(self, info: Ctx) -> Room:
        return Room.of(await resolve.room_of(info.context, str(self.room_id)))


@strawberry.type
class RoomClosed(RoomEvent):
    pass


@strawberry.type(description="Someone joined the room's call (or rejoined with a new session).")
class CallParticipantJoined(RoomEvent):
    participant: CallParticipant


@strawberry.type
class CallParticipantLeft(RoomEvent):
    reason: str = strawberry.field(description="left, disconnected (no socket within the "
                                               "grace, or stale) or removed")

    @strawberry.field
    async def user(self, info: Ctx) -> User:
        return User.of(await resolve.user_of(info.context, self._ref or ""))


@strawberry.type(description="A participant muted, unmuted, or turned their camera on or off.")
class MediaStateChanged(RoomEvent):
    participant: CallParticipant


@strawberry.type
class ScreenShareChanged(RoomEvent):
    screen_share: ScreenShare


@strawberry.type(description="A host started recording the call: answer with "
                             "giveRecordingConsent; nobody is recorded without it.")
class RecordingConsentRequested(RoomEvent):
    recording: CallRecording


@strawberry.type(description="The recording started or stopped, or someone answered.")
class RecordingStateChanged(RoomEvent):
    recording: CallRecording


@strawberry.type(description="A file was shared in the room (uploaded; it may still wait for "
                             "the virus scanner: see its status).")
class FileShared(RoomEvent):
    @strawberry.field
    async def file(self, info: Ctx) -> Annotated[SharedFile, strawberry.lazy("schema.files")]:
        from schema.files import SharedFile

        return SharedFile.of(await files.access_file(info.context, self._ref or ""))


@strawberry.type(description="The assistant's answer streams (ephemeral, cumulative text, at "
                             "most one every 100 ms) and ends (durable, done: true).")
class AssistantReplyUpdated(RoomEvent):
    _snapshot: strawberry.Private[dict[str, Any] | None] = None

    @strawberry.field
    async def reply(self, info: Ctx) -> Annotated[AssistantReply,
                                                  strawberry.lazy("schema.assistant")]:
        from schema.assistant import AssistantReply

        if self._snapshot is not None:
            return AssistantReply.of_data(self._snapshot)
        return AssistantReply.of(await assistant.reply_of(info.context, self._ref or ""))


@strawberry.type
class TypingMutation:
    @strawberry.mutation(description="Announce typing; it expires by itself ~5 s after the "
                                     "last call.")
    async def set_typing(self, info: Ctx, room_id: strawberry.ID, typing: bool) -> bool:
        return await resolve.set_typing(info.context, room_id, typing)


EVENT_TYPES: tuple[type[RoomEvent], ...] = (
    MessagePosted, MessageEdited, MessageDeleted, ReactionsChanged, ParticipantJoined,
    ParticipantRoleChanged, ParticipantLeft, TypingChanged, PresenceChanged, JoinRequested,
    RoomUpdated, RoomClosed, CallParticipantJoined, CallParticipantLeft, MediaStateChanged,
    ScreenShareChanged, RecordingConsentRequested, RecordingStateChanged, FileShared,
    AssistantReplyUpdated,
)


@strawberry.type
class RoomEventsSubscription:
    @strawberry.subscription(description="Replays what happened after `after` (from storage), "
                                         "then streams live, in seq order.")
    async def room_events(self, info: Ctx, room_id: strawberry.ID,
                          after: str | None = None) -> AsyncGenerator[RoomEvent, None]:
        async for event in resolve.room_events(info.context, room_id, after):
            yield event


_BY_TYPE: dict[str, type[RoomEvent]] = {cls.__name__: cls for cls in EVENT_TYPES}


def event_object(room_id: str, type_name: str, at: datetime, cursor: str, *,
                 message_id: str | None, user_id: str | None, request_id: str | None,
                 data: dict[str, object], durable: bool = True) -> RoomEvent:
    """The GraphQL object for one stored or announced event (what roomEvents resolves to)."""
    cls = _BY_TYPE[type_name]
    ref = message_id or request_id or user_id
    common = {"room_id": strawberry.ID(room_id), "cursor": cursor, "at": at, "_ref": ref,
              "durable": durable}
    if cls is TypingChanged:
        return TypingChanged(typing=bool(data.get("typing")), **common)  # type: ignore[arg-type]
    if cls is PresenceChanged:
        return PresenceChanged(online=bool(data.get("online")), **common)  # type: ignore[arg-type]
    if cls in CALL_EVENTS:
        return _call_event(cls, common, data)
    if cls is AssistantReplyUpdated:
        snapshot = data.get("reply")
        kept = dict(snapshot) if isinstance(snapshot, dict) else None
        return AssistantReplyUpdated(**common, _snapshot=kept)  # type: ignore[arg-type]
    if cls is FileShared:
        return FileShared(**{**common, "_ref": str(data.get("fileId", ""))})  # type: ignore[arg-type]
    return cls(**common)  # type: ignore[arg-type]


CALL_EVENTS = frozenset({CallParticipantJoined, CallParticipantLeft, MediaStateChanged,
                         ScreenShareChanged, RecordingConsentRequested, RecordingStateChanged})


def _call_event(cls: type[RoomEvent], common: dict[str, Any],
                data: dict[str, Any]) -> RoomEvent:
    """A call event from what rtc/ announced with it (ephemeral: the state travels along)."""
    if cls is CallParticipantLeft:
        return CallParticipantLeft(reason=str(data.get("reason", "left")), **common)
    if cls in (CallParticipantJoined, MediaStateChanged):
        participant = CallParticipant.of_data(dict(data["participant"]))
        return cls(participant=participant, **common)
    if cls is ScreenShareChanged:
        return ScreenShareChanged(screen_share=ScreenShare.of_data(data.get("screenShare")),
                                  **common)
    recording = CallRecording.of_data(data["recording"])
    return cls(recording=recording, **common)  # type: ignore[call-arg]

"""Room, its participants and join requests."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self

import strawberry
from strawberry.types import Info

from graph_db.models import JoinRequestRecord, ParticipantRecord, RoomRecord
from resolvers import assistant, call_media, calls, membership, message_fields, room_fields
from resolvers import rooms as resolve
from resolvers.context import Context
from resolvers.files import room_files
from resolvers.maybe import MaybeAwaitable, then
from schema.calls import Call, ScreenShare
from schema.common import PageInfo
from schema.enums import JoinRequestStatus, JoinStatus, ParticipantRole, RoomType, RoomVisibility
from schema.users import User

if TYPE_CHECKING:
    from schema.assistant import AssistantReply
    from schema.files import FileConnection
    from schema.messages import MessageConnection

Ctx = Info[Context, None]


@strawberry.type
class Participant:
    role: ParticipantRole
    joined_at: datetime
    _user_id: strawberry.Private[str]
    _room_id: strawberry.Private[str]

    @classmethod
    def of(cls, record: ParticipantRecord) -> Self:
        return cls(role=record.role, joined_at=record.joined_at, _user_id=record.user_id,
                   _room_id=record.room_id)

    @strawberry.field(description="A socket of this user follows this room's events now.")
    async def online(self, info: Ctx) -> bool:
        return await info.context.loaders.online_in_room.load((self._room_id, self._user_id))

    @strawberry.field
    async def user(self, info: Ctx) -> User:
        return User.of(await room_fields.user_of(info.context, self._user_id))


@strawberry.federation.type(keys=["id"])
class Room:
    id: strawberry.ID
    name: str
    description: str | None
    type: RoomType
    visibility: RoomVisibility
    max_participants: int
    created_at: datetime
    updated_at: datetime
    _record: strawberry.Private[RoomRecord]

    @classmethod
    def of(cls, r: RoomRecord) -> Self:
        return cls(id=strawberry.ID(r.id), name=r.name, description=r.description, type=r.type,
                   visibility=r.visibility, max_participants=r.max_participants,
                   created_at=r.created_at, updated_at=r.updated_at, _record=r)

    @classmethod
    async def resolve_reference(cls, info: Ctx, id: strawberry.ID) -> Self | None:
        found = await room_fields.room_of(info.context, id)
        return cls.of(found) if found else None

    @strawberry.field(graphql_type=User)
    def host(self, info: Ctx) -> MaybeAwaitable[User]:
        return then(room_fields.host(info.context, self._record), User.of)

    @strawberry.field
    async def participants(self, info: Ctx) -> list[Participant]:
        found = await room_fields.participants(info.context, self._record)
        return [Participant.of(p) for p in found]

    @strawberry.field(graphql_type=int)
    def participant_count(self, info: Ctx) -> MaybeAwaitable[int]:
        return room_fields.participant_count(info.context, self._record)

    @strawberry.field(description="The caller's membership, null when the caller is not a "
                                  "participant.")
    async def my_membership(self, info: Ctx) -> Participant | None:
        found = await room_fields.my_membership(info.context, self._record)
        return Participant.of(found) if found else None

    @strawberry.field(description="Newest last; page backwards with last/before.")
    async def messages(self, info: Ctx, last: int | None = 50, before: str | None = None,
                       ) -> Annotated[MessageConnection, strawberry.lazy("schema.messages")]:
        from schema.messages import MessageConnection  # schema.messages imports Room

        page = await message_fields.room_messages(info.context, self._record, last, before)
        return MessageConnection.of(page)

    @strawberry.field
    async def unread_count(self, info: Ctx) -> int:
        return await message_fields.unread_count(info.context, self._record)

    @strawberry.field(description="Who is in the room's call, with their media (participants "
                                  "only; null when nobody is).")
    async def call(self, info: Ctx) -> Call | None:
        state = await calls.call_of(info.context, self._record)
        max_video = info.context.settings.call_max_video
        return Call.of(self.id, state, max_video) if state is not None else None

    @strawberry.field(description="Newest first; participants only (others: empty).")
    async def files(self, info: Ctx, first: int | None = 50, after: str | None = None
                    ) -> Annotated[FileConnection, strawberry.lazy("schema.files")]:
        from schema.files import FileConnection

        return FileConnection.of(await room_files(info.context, self._record, first, after))

    @strawberry.field(description="Whether participants may ask the assistant here (its hosts "
                                  "turn it off with setRoomAssistant).")
    def assistant_enabled(self) -> bool:
        return self._record.assistant_enabled

    @strawberry.field(description="The assistant's replies, newest last; participants only "
                                  "(others: empty).")
    async def assistant_replies(self, info: Ctx, last: int | None = 20
                                ) -> list[Annotated[AssistantReply,
                                                    strawberry.lazy("schema.assistant")]]:
        from schema.assistant import AssistantReply

        found = await assistant.room_replies(info.context, self._record, last)
        return [AssistantReply.of(r) for r in found]

    @strawberry.field(description="Inactive for non-participants.")
    async def screen_share(self, info: Ctx) -> ScreenShare:
        return ScreenShare.of(await call_media.screen_share_of(info.context, self._record))

    @strawberry.field(description="Hosts and moderators only.")
    async def join_requests(self, info: Ctx, status: JoinRequestStatus | None =
                            JoinRequestStatus.PENDING) -> list[JoinRequest]:
        found = await membership.join_requests_of(info.context, self._record, status)
        return [JoinRequest.of(j) for j in found]


@strawberry.type
class JoinRequest:
    id: strawberry.ID
    status: JoinRequestStatus
    message: str | None
    created_at: datetime
    decided_at: datetime | None
    _record: strawberry.Private[JoinRequestRecord]

    @classmethod
    def of(cls, j: JoinRequestRecord) -> Self:
        return cls(id=strawberry.ID(j.id), status=j.status, message=j.message,
                   created_at=j.created_at, decided_at=j.decided_at, _record=j)

    @strawberry.field
    async def room(self, info: Ctx) -> Room:
        found = await info.context.loaders.room.load(self._record.room_id)
        assert found is not None
        return Room.of(found)

    @strawberry.field
    async def user(self, info: Ctx) -> User:
        return User.of(await room_fields.user_of(info.context, self._record.user_id))

    @strawberry.field
    async def decided_by(self, info: Ctx) -> User | None:
        decider = self._record.decided_by_id
        return User.of(await room_fields.user_of(info.context, decider)) if decider else None


@strawberry.type
class JoinRoomResult:
    status: JoinStatus
    room: Room
    request: JoinRequest | None

    @classmethod
    def of(cls, result: membership.JoinResult) -> Self:
        return cls(status=JoinStatus.JOINED if result.joined else JoinStatus.PENDING,
                   room=Room.of(result.room),
                   request=JoinRequest.of(result.request) if result.request else None)


@strawberry.type
class RoomEdge:
    cursor: str
    node: Room


@strawberry.type
class RoomConnection:
    edges: list[RoomEdge]
    page_info: PageInfo
    _page: strawberry.Private[resolve.RoomPage]

    @classmethod
    def of(cls, found: resolve.RoomPage) -> Self:
        page = found.page
        edges = [RoomEdge(cursor=c, node=Room.of(r))
                 for r, c in zip(page.items, page.cursors, strict=True)]
        info = PageInfo.of(page)
        return cls(edges=edges, page_info=info, _page=found)

    @strawberry.field
    async def total_count(self, info: Ctx) -> int:
        return await resolve.count_rooms(info.context, self._page)

"""Room and user operations: each field parses its arguments and hands over to resolvers/."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from resolvers import membership, rooms, users
from resolvers.audit import audited
from resolvers.context import Context
from schema.enums import ParticipantRole, Role
from schema.inputs import CreateRoomInput, RoomFilter, UpdateRoomInput
from schema.rooms import JoinRequest, JoinRoomResult, Participant, Room, RoomConnection
from schema.users import User, UserConnection

Ctx = Info[Context, None]


@strawberry.type
class RoomQuery:
    @strawberry.field
    async def me(self, info: Ctx) -> User:
        return User.of(await users.me(info.context))

    @strawberry.field(extensions=audited("User", by="id", lookup=True))
    async def user(self, info: Ctx, id: strawberry.ID) -> User | None:
        found = await users.user(info.context, id)
        return User.of(found) if found else None

    @strawberry.field(extensions=audited("User"))
    async def users(self, info: Ctx, search: str | None = None, role: Role | None = None,
                    first: int | None = 20, after: str | None = None) -> UserConnection:
        page = await users.search_users(info.context, search=search, role=role, first=first,
                                        after=after)
        return UserConnection.of(page)

    @strawberry.field(extensions=audited("Room", by="id", lookup=True))
    async def room(self, info: Ctx, id: strawberry.ID) -> Room | None:
        found = await rooms.room(info.context, id)
        return Room.of(found) if found else None

    @strawberry.field(extensions=audited("Room"))
    async def rooms(self, info: Ctx, filter: RoomFilter | None = None, first: int | None = 20,
                    after: str | None = None) -> RoomConnection:
        f = filter or RoomFilter()
        page = await rooms.list_rooms(info.context, type=f.type, visibility=f.visibility,
                                      mine=bool(f.mine), search=f.search, first=first,
                                      after=after)
        return RoomConnection.of(page)


@strawberry.type
class RoomMutation:
    @strawberry.mutation(extensions=audited("Room", created=True))
    async def create_room(self, info: Ctx, input: CreateRoomInput) -> Room:
        return Room.of(await rooms.create_room(
            info.context, name=input.name, description=input.description, type=input.type,
            visibility=input.visibility, max_participants=input.max_participants,
            invite_user_ids=[str(i) for i in input.invite_user_ids or []]))

    @strawberry.mutation(extensions=audited("Room", by="id"))
    async def update_room(self, info: Ctx, id: strawberry.ID, input: UpdateRoomInput) -> Room:
        return Room.of(await rooms.update_room(info.context, id, input.changes()))

    @strawberry.mutation(extensions=audited("Room", by="id"))
    async def delete_room(self, info: Ctx, id: strawberry.ID) -> strawberry.ID:
        return strawberry.ID(await rooms.delete_room(info.context, id))

    @strawberry.mutation(extensions=audited("Room", by="id"))
    async def join_room(self, info: Ctx, id: strawberry.ID,
                        message: str | None = None) -> JoinRoomResult:
        return JoinRoomResult.of(await membership.join_room(info.context, id, message))

    @strawberry.mutation(extensions=audited("Room", by="id"))
    async def leave_room(self, info: Ctx, id: strawberry.ID) -> Room:
        return Room.of(await membership.leave_room(info.context, id))

    @strawberry.mutation(extensions=audited("Room", by="room_id"))
    async def invite_to_room(self, info: Ctx, room_id: strawberry.ID,
                             user_ids: list[strawberry.ID]) -> Room:
        return Room.of(await membership.invite(info.context, room_id, [str(u) for u in user_ids]))

    @strawberry.mutation(extensions=audited("Participant", by="user_id", room="room_id"))
    async def remove_participant(self, info: Ctx, room_id: strawberry.ID,
                                 user_id: strawberry.ID) -> Room:
        return Room.of(await membership.remove_participant(info.context, room_id, user_id))

    @strawberry.mutation(extensions=audited("JoinRequest", by="id"))
    async def decide_join_request(self, info: Ctx, id: strawberry.ID,
                                  approve: bool) -> JoinRequest:
        return JoinRequest.of(await membership.decide_join_request(info.context, id, approve))

    @strawberry.mutation(description="Hosts and admins make members moderators or co-hosts.",
                        extensions=audited("Participant", by="user_id", room="room_id"))
    async def set_participant_role(self, info: Ctx, room_id: strawberry.ID,
                                   user_id: strawberry.ID, role: ParticipantRole) -> Participant:
        return Participant.of(await membership.set_participant_role(
            info.context, room_id, user_id, role))

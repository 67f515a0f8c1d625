"""Input types of the room and membership mutations."""

from __future__ import annotations

import strawberry

from schema.enums import RoomType, RoomVisibility


@strawberry.input
class RoomFilter:
    type: RoomType | None = None
    visibility: RoomVisibility | None = None
    mine: bool | None = strawberry.field(default=None,
                                         description="Only rooms the caller participates in.")
    search: str | None = None


@strawberry.input
class CreateRoomInput:
    name: str
    description: str | None = None
    type: RoomType
    visibility: RoomVisibility = RoomVisibility.PRIVATE
    max_participants: int | None = None
    invite_user_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Users added as participants (and notified) at creation.")


@strawberry.input
class UpdateRoomInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    visibility: RoomVisibility | None = strawberry.UNSET
    max_participants: int | None = strawberry.UNSET

    def changes(self) -> dict[str, object]:
        """Only the fields the client sent; an explicit null description clears it."""
        return {k: v for k, v in vars(self).items() if v is not strawberry.UNSET}

"""The loaders of one GraphQL operation (never shared across operations: caches go stale)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from strawberry.dataloader import DataLoader

from graph_db import join_requests, messages, participants, rooms, users
from graph_db.driver import GraphDB
from graph_db.messages import MessageRecord, ReactionRecord
from graph_db.models import JoinRequestRecord, ParticipantRecord, RoomRecord, UserRecord
from realtime.presence import Presence

K = TypeVar("K")
V = TypeVar("V")


def _loader(db: GraphDB, fetch: Callable[[GraphDB, list[K]], Awaitable[Sequence[V]]],
            ) -> DataLoader[K, V]:
    async def load(keys: list[K]) -> Sequence[V]:
        return await fetch(db, list(keys))

    return DataLoader(load_fn=load)


class Loaders:
    """Created per operation by the context; attribute names say what each key is."""

    def __init__(self, db: GraphDB, viewer_id: str | None,
                 presence: Presence | None = None) -> None:
        self.user: DataLoader[str, UserRecord | None] = _loader(db, users.users_by_ids)
        self.room: DataLoader[str, RoomRecord | None] = _loader(db, rooms.rooms_by_ids)
        self.join_request: DataLoader[str, JoinRequestRecord | None] = _loader(
            db, join_requests.requests_by_ids)
        self.participants: DataLoader[str, list[ParticipantRecord]] = _loader(
            db, participants.participants_by_rooms)
        self.participant_count: DataLoader[str, int] = _loader(db, participants.counts_by_rooms)
        # Keyed by (room id, user id).
        self.membership: DataLoader[tuple[str, str], ParticipantRecord | None] = _loader(
            db, participants.memberships)
        # Keyed by (room id, user id): the room with the user's standing, for access checks.
        self.standing: DataLoader[tuple[str, str], rooms.Standing | None] = _loader(
            db, rooms.standings)
        self.shares_room: DataLoader[str, bool] = _loader(
            db, lambda d, ids: users.shares_room_with(d, viewer_id or "", ids))
        self.message: DataLoader[str, MessageRecord | None] = _loader(
            db, messages.messages_by_ids)
        # Keyed by message id.
        self.reactions: DataLoader[str, list[ReactionRecord]] = _loader(
            db, messages.reactions_by_messages)
        self.reply_count: DataLoader[str, int] = _loader(db, messages.reply_counts)
        # Keyed by (root message id, after seq, limit).
        self.replies: DataLoader[tuple[str, int | None, int], list[MessageRecord]] = _loader(
            db, messages.replies_pages)
        # Keyed by (room id, user id).
        self.unread_count: DataLoader[tuple[str, str], int] = _loader(
            db, messages.unread_counts)

        if presence is not None:
            # Keyed by user id (online anywhere) and by (room id, user id).
            self.online_user: DataLoader[str, bool] = DataLoader(
                load_fn=lambda ids: presence.online_users(list(ids)))
            self.online_in_room: DataLoader[tuple[str, str], bool] = DataLoader(
                load_fn=lambda keys: presence.online(list(keys)))

    def clear_all(self) -> None:
        """After a write: later reads in the same operation must not see cached state."""
        for loader in vars(self).values():
            if isinstance(loader, DataLoader):
                loader.clear_all()

"""The loaders of one GraphQL operation (never shared across operations: caches go stale)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from strawberry.dataloader import DataLoader

from graph_db import join_requests, participants, rooms, users
from graph_db.driver import GraphDB
from graph_db.models import JoinRequestRecord, ParticipantRecord, RoomRecord, UserRecord

K = TypeVar("K")
V = TypeVar("V")


def _loader(db: GraphDB, fetch: Callable[[GraphDB, list[K]], Awaitable[Sequence[V]]],
            ) -> DataLoader[K, V]:
    async def load(keys: list[K]) -> Sequence[V]:
        return await fetch(db, list(keys))

    return DataLoader(load_fn=load)


class Loaders:
    """Created per operation by the context; attribute names say what each key is."""

    def __init__(self, db: GraphDB, viewer_id: str | None) -> None:
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
        self.invited: DataLoader[tuple[str, str], bool] = _loader(db, participants.invitations)
        self.shares_room: DataLoader[str, bool] = _loader(
            db, lambda d, ids: users.shares_room_with(d, viewer_id or "", ids))

    def clear_all(self) -> None:
        """After a write: later reads in the same operation must not see cached state."""
        for loader in vars(self).values():
            if isinstance(loader, DataLoader):
                loader.clear_all()

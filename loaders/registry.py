"""The loaders of one GraphQL operation (never shared across operations: caches go stale)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from graph_db import assistant, files, join_requests, messages, participants, rooms, users
from graph_db.driver import GraphDB
from graph_db.messages import MessageRecord, ReactionRecord
from graph_db.models import JoinRequestRecord, ParticipantRecord, RoomRecord, UserRecord
from realtime.presence import Presence

K = TypeVar("K")
V = TypeVar("V")


def _loader(db: GraphDB, fetch: Callable[[GraphDB, list[K]], Awaitable[Sequence[V]]],
            ) -> DataLoader[K, V]:
    # The operation's batch joins those of concurrent operations (graph_db/coalesce.py).
    coalescer = db.coalesced(fetch)

    async def load(keys: list[K]) -> Sequence[V]:
        return await coalescer.load_many(list(keys))

    return DataLoader(load_fn=load)


class Loaders:
    """Created per operation by the context; attribute names say what each key is.

    Each loader is made on first use: an operation reads two or three kinds of thing, and
    making all fourteen for every operation cost ~40 µs (a tenth of a small query)."""

    user: DataLoader[str, UserRecord | None]
    room: DataLoader[str, RoomRecord | None]
    join_request: DataLoader[str, JoinRequestRecord | None]
    participants: DataLoader[str, list[ParticipantRecord]]
    participant_count: DataLoader[str, int]
    # Keyed by (room id, user id).
    membership: DataLoader[tuple[str, str], ParticipantRecord | None]
    # Keyed by (room id, user id): the room with the user's standing, for access checks.
    standing: DataLoader[tuple[str, str], rooms.Standing | None]
    shares_room: DataLoader[str, bool]
    message: DataLoader[str, MessageRecord | None]
    # Keyed by message id.
    reactions: DataLoader[str, list[ReactionRecord]]
    reply_count: DataLoader[str, int]
    # Keyed by (root message id, after seq, limit).
    replies: DataLoader[tuple[str, int | None, int], list[MessageRecord]]
    # Keyed by (room id, user id).
    unread_count: DataLoader[tuple[str, str], int]
    # Keyed by user id (online anywhere) and by (room id, user id); with presence only.
    online_user: DataLoader[str, bool]
    online_in_room: DataLoader[tuple[str, str], bool]
    file: DataLoader[str, Any]
    # Keyed by message id: its attached files.
    attachments: DataLoader[str, list[Any]]
    assistant_reply: DataLoader[str, Any]
    # Keyed by room id: its call (rtc/state.CallState), from Redis or the process.
    call: DataLoader[str, Any]

    def __init__(self, db: GraphDB, viewer_id: str | None,
                 presence: Presence | None = None,
                 calls: Callable[[list[str]], Awaitable[list[Any]]] | None = None) -> None:
        self._db = db
        self._viewer_id = viewer_id or ""
        self._presence = presence
        self._calls = calls

    def __getattr__(self, name: str) -> DataLoader[Any, Any]:
        # Only called for attributes not set yet: make the loader, keep it.
        fetch = _FETCHES.get(name)
        if fetch is not None:
            loader = _loader(self._db, fetch)
        elif name == "shares_room":
            viewer, db = self._viewer_id, self._db
            # Per viewer: not coalesced (a coalescer per fetch function, kept by the process).
            loader = DataLoader(load_fn=lambda ids: users.shares_room_with(db, viewer, list(ids)))
        elif name in ("online_user", "online_in_room") and self._presence is not None:
            loader = _presence_loader(self._presence, name)
        elif name == "call" and self._calls is not None:
            calls = self._calls  # a page of rooms: one MGET for all their calls
            loader = DataLoader(load_fn=lambda ids: calls(list(ids)))
        else:
            raise AttributeError(name)
        setattr(self, name, loader)
        return loader

    def clear_all(self) -> None:
        """After a write: later reads in the same operation must not see cached state."""
        for loader in vars(self).values():
            if isinstance(loader, DataLoader):
                loader.clear_all()


def _presence_loader(presence: Presence, name: str) -> DataLoader[Any, bool]:
    if name == "online_user":
        return DataLoader(load_fn=lambda ids: presence.online_users(list(ids)))
    return DataLoader(load_fn=lambda keys: presence.online(list(keys)))


_FETCHES: dict[str, Callable[[GraphDB, list[Any]], Awaitable[Sequence[Any]]]] = {
    "user": users.users_by_ids,
    "room": rooms.rooms_by_ids,
    "join_request": join_requests.requests_by_ids,
    "participants": participants.participants_by_rooms,
    "participant_count": participants.counts_by_rooms,
    "membership": participants.memberships,
    "standing": rooms.standings,
    "message": messages.messages_by_ids,
    "reactions": messages.reactions_by_messages,
    "reply_count": messages.reply_counts,
    "replies": messages.replies_pages,
    "unread_count": messages.unread_counts,
    "file": files.files_by_ids,
    "attachments": files.of_messages,
    "assistant_reply": assistant.replies_by_ids,
}

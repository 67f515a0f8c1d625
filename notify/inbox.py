"""In-app notifications: who gets what, written once per (cause, recipient, kind), and told
live on their `notifications` subscription in any instance.

Who gets what (issue 11): a join request → the room's hosts and moderators; a decision → the
requester; an invitation → the invitee; a mention → the mentioned participant; a reply → the
parent's author and the thread's writers; a room update → its participants. Never the actor.
Work happens off the request path: a failure is logged, never the caller's."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

import orjson

from graph_db import notifications as store
from graph_db.assistant import ReplyRecord
from graph_db.driver import GraphDB
from graph_db.events import EventRecord, EventType
from graph_db.files import FileRecord
from graph_db.messages import MessageRecord
from graph_db.models import JoinRequestRecord
from graph_db.notifications import NewNotification, NotificationRecord
from observability.metrics import NOTIFICATIONS
from realtime.channels import Channels
from realtime.pubsub import PubSub

log = logging.getLogger(__name__)

TITLES = {
    "JOIN_REQUEST": "Someone asked to join a room you manage",
    "JOIN_DECISION": "Your request to join a room was decided",
    "INVITATION": "You were added to a room",
    "MENTION": "You were mentioned",
    "REPLY": "New reply in a thread you follow",
    "ROOM_UPDATED": "A room you are in was updated",
    "FILE_SCANNED": "A file you shared was scanned",
    "ASSISTANT": "The assistant answered your question",
}


def _decode(raw: bytes) -> NotificationRecord:
    return NotificationRecord(**orjson.loads(raw))


class Inbox:
    def __init__(self, db: GraphDB, pubsub: PubSub) -> None:
        self.db = db
        self.live: Channels[str, NotificationRecord] = Channels(
            pubsub, lambda user: f"collab:notify:{user}", _decode)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- causes (each spawns its work and returns at once) -------------------------------------

    def message_posted(self, message: MessageRecord, event: EventRecord) -> None:
        self._spawn(self._message(message, event))

    def decided(self, request: JoinRequestRecord, approved: bool, actor_id: str) -> None:
        body = "approved" if approved else "declined"
        self._spawn(self._send([self._new(
            f"request:{request.id}", request.user_id, "JOIN_DECISION", request.room_id,
            actor_id, request.id, body=body)], actor_id))

    def room_created(self, room_id: str, invitees: list[str], actor_id: str) -> None:
        """Those added at creation are invited (a creation has no room event)."""
        self._spawn(self._send([self._new(f"created:{room_id}", user, "INVITATION", room_id,
                                          actor_id, None) for user in invitees], actor_id))

    async def file_scanned(self, record: FileRecord) -> None:
        """A file that waited for the scanner has its verdict: its uploader is told."""
        body = "clean: it can be downloaded" if record.status == "CLEAN" else "refused: infected"
        await self._send([self._new(f"scan:{record.id}", record.uploader_id, "FILE_SCANNED",
                                    record.room_id, None, record.id, body=body)], None)

    async def assistant_replied(self, reply: ReplyRecord) -> None:
        """The asker's answer is finished (they may have gone elsewhere meanwhile)."""
        body = reply.status.lower()
        await self._send([self._new(f"assistant:{reply.id}", reply.asked_by, "ASSISTANT",
                                    reply.room_id, None, reply.id, body=body)], None)

    def room_events(self, events: list[EventRecord], actor_id: str) -> None:
        """Join requests, invitations (someone else added to the room) and room updates."""
        for event in events:
            if event.type is EventType.JOIN_REQUESTED:
                self._spawn(self._to_query(store.MANAGERS, "JOIN_REQUEST", _key(event),
                                           event.room_id, actor_id, event.request_id,
                                           roomId=event.room_id))
            elif event.type is EventType.PARTICIPANT_JOINED and event.user_id != actor_id:
                self._spawn(self._invited(event, actor_id))
            elif event.type is EventType.ROOM_UPDATED:
                self._spawn(self._to_query(store.PARTICIPANTS, "ROOM_UPDATED", _key(event),
                                           event.room_id, actor_id, None,
                                           roomId=event.room_id))

    # -- work --------------------------------------------------------------------------------

    async def _invited(self, event: EventRecord, actor_id: str) -> None:
        """An addition by someone else: an invitation, unless it approved a request (the
        requester hears of the decision instead)."""
        if await self._has_decided_request(event):
            return
        assert event.user_id is not None
        await self._send([self._new(_key(event), event.user_id, "INVITATION", event.room_id,
                                    actor_id, None)], actor_id)

    async def _has_decided_request(self, event: EventRecord) -> bool:
        assert event.user_id is not None
        return await store.approved_request(self.db, event.room_id, event.user_id)

    async def _message(self, message: MessageRecord, event: EventRecord) -> None:
        key, actor = _key(event), message.author_id
        at = event.at_ms
        items = [self._new(key, user, "MENTION", message.room_id, actor, message.id, at_ms=at)
                 for user in message.mention_ids]
        if message.parent_id is not None:
            mentioned = set(message.mention_ids)
            for user in await self._thread(message):
                if user not in mentioned:  # a mention says more than a reply
                    items.append(self._new(key, user, "REPLY", message.room_id, actor,
                                           message.id, at_ms=at))
        await self._send(items, actor)

    async def _thread(self, message: MessageRecord) -> list[str]:
        authors = await store.authors(self.db, [i for i in (message.parent_id, message.root_id)
                                                if i])
        return await store.recipients(self.db, store.THREAD, roomId=message.room_id,
                                      rootId=message.root_id or message.parent_id,
                                      seq=message.seq, authors=authors)

    async def _to_query(self, query: str, kind: str, key: str, room_id: str,
                        actor_id: str, ref_id: str | None, **params: Any) -> None:
        users = await store.recipients(self.db, query, **params)
        await self._send([self._new(key, user, kind, room_id, actor_id, ref_id)
                          for user in users], actor_id)

    @staticmethod
    def _new(cause: str, user_id: str, kind: str, room_id: str | None, actor_id: str | None,
             ref_id: str | None, *, body: str | None = None,
             at_ms: int | None = None) -> NewNotification:
        return NewNotification(id=str(uuid.uuid4()), key=f"{cause}|{user_id}|{kind}",
                               user_id=user_id, kind=kind, title=TITLES[kind], body=body,
                               room_id=room_id, actor_id=actor_id, ref_id=ref_id, at_ms=at_ms)

    async def _send(self, items: list[NewNotification], actor_id: str | None) -> None:
        items = await self._wanted([i for i in items if i.user_id != actor_id])  # not the actor
        for record in await store.create(self.db, items):
            NOTIFICATIONS.labels(record.kind).inc()
            await self.live.publish(record.user_id,
                                    orjson.dumps(dataclasses.asdict(record)))

    async def _wanted(self, items: list[NewNotification]) -> list[NewNotification]:
        """Without what a room's setting silences: MUTED keeps only what is addressed to the
        user alone (invitations, decisions, scan verdicts), MENTIONS also mentions."""
        rooms = {i.room_id for i in items if i.room_id and i.kind not in DIRECT}
        levels: dict[tuple[str, str], str] = {}
        for room_id in rooms:
            users = [i.user_id for i in items if i.room_id == room_id]
            for user, level in (await store.levels(self.db, room_id, users)).items():
                levels[(room_id, user)] = level
        return [i for i in items if i.kind in DIRECT or _heard(
            levels.get((i.room_id or "", i.user_id), "ALL"), i.kind)]

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            log.exception("notifications not written")

    async def drain(self) -> None:
        """Waits for the work under way (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def sizes(self) -> dict[str, int]:
        return {"inbox.tasks": len(self._tasks), **self.live.sizes("notify")}


DIRECT = frozenset({"INVITATION", "JOIN_DECISION", "FILE_SCANNED", "ASSISTANT"})


def _heard(level: str, kind: str) -> bool:
    return level == "ALL" or (level == "MENTIONS" and kind == "MENTION")


def _key(event: EventRecord) -> str:
    """A durable event is named by its room and seq: the same event, the same key."""
    return f"event:{event.room_id}:{event.seq}"

"""One room's ordered stream in this process: gap-free, duplicate-free, rendered once per
group of identical subscriptions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Hashable
from itertools import pairwise
from typing import Protocol

from graph_db import events as event_log
from graph_db import participants
from graph_db.driver import GraphDB
from graph_db.events import EventRecord, EventType
from graph_db.models import ParticipantRole
from observability.metrics import FANOUT_DELIVERIES
from realtime import cursor
from realtime.envelope import Envelope
from realtime.subscriber import Body, Subscriber

log = logging.getLogger(__name__)
CATCH_UP_PAGE = 200
TYPING_TTL_S = 5.0
MANAGERS_ONLY = frozenset({EventType.JOIN_REQUESTED})
MANAGER_ROLES = frozenset({ParticipantRole.HOST, ParticipantRole.MODERATOR})
EMPTY_SELECTION = '{"data":{"roomEvents":{}}}'
YIELD_EVERY = 500
# Replays after a deploy or a blip: every client of a room resumes from about the same
# cursor. The stream keeps its newest events and the replayed renders of each group, so a
# storm of N resuming subscribers costs one read and one render per group, not N of each
# (bench/storm.py). Small per room: a process may follow thousands of rooms.
RECENT_EVENTS = 64
REPLAY_RENDERS = 32


class _Abandoned(Exception):
    """A shared replay render that did not finish."""


class Renderer(Protocol):
    async def render(self, sub: Subscriber, envelope: Envelope, cursor: str) -> str:
        """The JSON `payload` of a `next` frame for `sub` (and everyone in its group)."""


class RoomStream:
    def __init__(self, room_id: str, db: GraphDB, renderer: Renderer, *,
                 typing_ttl: float = TYPING_TTL_S) -> None:
        self.room_id = room_id
        self.typing_ttl = typing_ttl
        self.db = db
        self.renderer = renderer
        self.last_seq = 0
        self.groups: dict[Hashable, dict[int, Subscriber]] = {}
        self.typing_until: dict[str, float] = {}
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=10_000)
        self._task: asyncio.Task[None] | None = None
        self._typing_timer: asyncio.TimerHandle | None = None
        self._expiry_tick = Envelope(EventRecord(room_id, 0, EventType.TYPING_CHANGED, 0))
        self._tick_queued = False
        self.closed = False
        # Contiguous, ending at last_seq when not empty.
        self._recent: deque[EventRecord] = deque(maxlen=RECENT_EVENTS)
        self._replayed: OrderedDict[tuple[Hashable, int], asyncio.Future[Body]] = OrderedDict()

    async def start(self) -> None:
        head = await event_log.stream_head(self.db, self.room_id)
        self.last_seq = head.seq if head else 0
        self._task = asyncio.create_task(self._run(), name=f"room-stream-{self.room_id}")

    async def stop(self) -> None:
        if self._typing_timer:
            self._typing_timer.cancel()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def subscriber_count(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def offer(self, envelope: Envelope) -> bool:
        """From pub/sub; a full queue drops the envelope and the next one fills the gap."""
        try:
            self._queue.put_nowait(envelope)
        except asyncio.QueueFull:
            log.warning("room %s stream queue full; recovering from storage", self.room_id)
            return False
        return True

    def resync(self) -> None:
        """After a pub/sub outage: pick up whatever was committed meanwhile."""
        self.offer(Envelope(EventRecord(self.room_id, -1, EventType.ROOM_UPDATED, 0)))

    # -- subscribers ---------------------------------------------------------------------

    def add(self, sub: Subscriber) -> None:
        self.groups.setdefault(sub.group_key, {})[id(sub)] = sub

    def remove(self, sub: Subscriber) -> None:
        group = self.groups.get(sub.group_key)
        if group is not None:
            group.pop(id(sub), None)
            if not group:
                del self.groups[sub.group_key]

    def _subscribers_of(self, user_id: str | None) -> list[Subscriber]:
        return [s for g in self.groups.values() for s in g.values()
                if user_id is None or s.user_id == user_id]

    def end_all(self, code: str, message: str) -> None:
        self._end(self._subscribers_of(None), code, message)

    def _end(self, subs: list[Subscriber], code: str | None, message: str) -> None:
        # Out of the groups first, synchronously: no frame may follow the final message.
        for sub in subs:
            self.remove(sub)
            sub.live = False
            sub.end(code, message)

    async def catch_up(self, sub: Subscriber) -> None:
        """Replays from memory or storage until `sub` reaches the live head, then makes it
        live with no await in between, so the seam has neither a gap nor a duplicate."""
        while not sub.live and not sub.outbox.closed:
            target = self.last_seq
            if sub.delivered_seq >= target:
                sub.live = True
                return
            page = self._recent_after(sub.delivered_seq, target)
            if page is None:
                page = await event_log.events_after(self.db, self.room_id, sub.delivered_seq,
                                                    up_to=target, limit=CATCH_UP_PAGE)
                self._remember(page)
            if not page:
                sub.delivered_seq = target
                continue
            sent = 0
            for record in page:
                if record.type not in MANAGERS_ONLY or sub.manager:
                    await sub.send_body(await self._replay_body(sub, record))
                    sent += 1
                sub.delivered_seq = record.seq
            if sent:
                FANOUT_DELIVERIES.inc(sent)

    def _recent_after(self, after: int, up_to: int) -> list[EventRecord] | None:
        """The events after `after` up to `up_to` when memory holds all of them."""
        recent = self._recent
        if not recent or recent[0].seq > after + 1 or recent[-1].seq < up_to:
            return None
        start = after + 1 - recent[0].seq
        return [recent[i] for i in range(start, min(len(recent), start + CATCH_UP_PAGE))
                if recent[i].seq <= up_to]

    def _remember(self, page: list[EventRecord]) -> None:
        """A page read from storage that reaches the head seeds the memory of a new stream."""
        if self._recent or not page or page[-1].seq != self.last_seq:
            return
        if all(b.seq == a.seq + 1 for a, b in pairwise(page)):
            self._recent.extend(page)

    async def _replay_body(self, sub: Subscriber, record: EventRecord) -> Body:
        """A replayed event as `sub`'s group sees it: rendered once per group (as live), also
        when the group's subscribers replay it at the same moment."""
        key = (sub.group_key, record.seq)
        while (pending := self._replayed.get(key)) is not None:
            self._replayed.move_to_end(key)
            try:
                return await asyncio.shield(pending)
            except _Abandoned:
                continue  # its renderer failed or went away: render it here
        rendered: asyncio.Future[Body] = asyncio.get_running_loop().create_future()
        self._replayed[key] = rendered
        if len(self._replayed) > REPLAY_RENDERS:
            self._replayed.popitem(last=False)
        try:
            body = Body(await self.renderer.render(sub, Envelope(record), self.cursor(record.seq)))
        except BaseException:
            if self._replayed.get(key) is rendered:
                del self._replayed[key]
            rendered.set_exception(_Abandoned())
            rendered.exception()  # retrieved: waiters, if any, render for themselves
            raise
        rendered.set_result(body)
        return body

    def cursor(self, seq: int) -> str:
        return cursor.encode(self.room_id, seq)

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            envelope = await self._queue.get()
            try:
                await self._process(envelope)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("room %s: event %s failed", self.room_id, envelope.event)

    async def _process(self, envelope: Envelope) -> None:
        seq = envelope.event.seq
        if seq == 0:
            await self._ephemeral(envelope)
            return
        if seq == self.last_seq + 1:
            await self._durable(envelope)
            return
        if seq > self.last_seq or seq < 0:
            await self._fill_gap(seq if seq > 0 else None)

    async def _fill_gap(self, up_to: int | None) -> None:
        while True:
            page = await event_log.events_after(self.db, self.room_id, self.last_seq,
                                                up_to=up_to, limit=CATCH_UP_PAGE)
            for record in page:
                await self._durable(Envelope(record))
            if len(page) < CATCH_UP_PAGE:
                return

    async def _durable(self, envelope: Envelope) -> None:
        event = envelope.event
        if self._recent and self._recent[-1].seq != event.seq - 1:
            self._recent.clear()  # a gap in storage: memory stays contiguous
        self._recent.append(event)
        if event.type is not EventType.MESSAGE_POSTED:
            # An edit, a deletion, a role change...: a replay renders what is stored now
            # (a deleted message's content must not come back from memory).
            self._replayed.clear()
        self.last_seq = event.seq
        for group in list(self.groups.values()):
            await self._dispatch_group(group, envelope)
        await self._after(event)

    async def _dispatch_group(self, group: dict[int, Subscriber], envelope: Envelope) -> None:
        event = envelope.event
        managers_only = event.type in MANAGERS_ONLY
        sample = next((s for s in group.values()
                       if s.live and (s.manager or not managers_only)), None)
        body = None
        if sample is not None:
            payload = await self.renderer.render(sample, envelope, self.cursor(event.seq))
            if payload != EMPTY_SELECTION:  # else the group selected nothing of this event
                body = Body(payload)
        seq, previous = event.seq, event.seq - 1
        sent = 0  # counted here, added to the metric once per event and group
        for n, sub in enumerate(list(group.values()), 1):
            if not sub.live:
                continue
            if sub.delivered_seq == previous:
                sub.delivered_seq = seq  # also for those who may not see it
                if body is not None and (sub.manager or not managers_only):
                    await sub.send_body(body)
                    sent += 1
            elif sub.delivered_seq < event.seq - 1:
                sub.fell_behind()  # missed something: back to catching up from storage
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a big room must not hold up every other request
        if sent:
            FANOUT_DELIVERIES.inc(sent)

    async def _after(self, event: EventRecord) -> None:
        """Authorization follows the stream itself: leaving ends the leaver's subscriptions,
        a role change changes what they may see (join requests)."""
        if event.type is EventType.PARTICIPANT_LEFT and event.user_id:
            self._end(self._subscribers_of(event.user_id), "FORBIDDEN",
                      "you are no longer a participant of this room")
        elif event.type is EventType.ROOM_CLOSED:
            self.closed = True
            self._end(self._subscribers_of(None), None, "room closed")
        elif event.type is EventType.PARTICIPANT_ROLE_CHANGED and event.user_id:
            await self._regroup(event.user_id)
        elif event.type is EventType.MESSAGE_POSTED and event.user_id in self.typing_until:
            await self._typing(event.user_id, typing=False)

    async def _regroup(self, user_id: str) -> None:
        subs = self._subscribers_of(user_id)
        if not subs:
            return
        found = await participants.memberships(self.db, [(self.room_id, user_id)])
        manager = found[0] is not None and found[0].role in MANAGER_ROLES
        for sub in subs:
            sub.manager = manager or sub.admin

    # -- ephemeral events -----------------------------------------------------------------

    async def _ephemeral(self, envelope: Envelope) -> None:
        event = envelope.event
        if envelope is self._expiry_tick:
            await self._expire_typing()
            return
        if event.type is EventType.TYPING_CHANGED and event.user_id:
            typing = bool(envelope.data.get("typing"))
            was = event.user_id in self.typing_until
            if typing:
                self.typing_until[event.user_id] = time.monotonic() + self.typing_ttl
                self._arm_typing_timer()
            else:
                self.typing_until.pop(event.user_id, None)
            if typing == was:
                return  # a refresh: nothing changed for the viewers
        await self._broadcast(envelope)

    async def _broadcast(self, envelope: Envelope) -> None:
        cur = self.cursor(self.last_seq)
        for group in list(self.groups.values()):
            live = [s for s in group.values() if s.live]
            if not live:
                continue
            payload = await self.renderer.render(live[0], envelope, cur)
            if payload == EMPTY_SELECTION:
                continue
            body = Body(payload)
            for n, sub in enumerate(live, 1):
                await sub.send_body(body)
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            FANOUT_DELIVERIES.inc(len(live))

    async def _typing(self, user_id: str, *, typing: bool) -> None:
        self.typing_until.pop(user_id, None)
        event = EventRecord(self.room_id, 0, EventType.TYPING_CHANGED,
                            int(time.time() * 1000), user_id=user_id)
        await self._broadcast(Envelope(event, {"typing": typing}))

    # Typing expires in the loop, in order with the refreshes queued before it: the timer
    # only queues one tick at a time, however long the queue takes to reach it.

    def _arm_typing_timer(self) -> None:
        if self._typing_timer is None and not self._tick_queued and self.typing_until:
            delay = max(0.05, min(self.typing_until.values()) - time.monotonic())
            self._typing_timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._typing_timer = None
        self._tick_queued = self.offer(self._expiry_tick)
        if not self._tick_queued:
            self._arm_typing_timer()  # the queue is full: try again shortly

    async def _expire_typing(self) -> None:
        self._tick_queued = False
        now = time.monotonic()
        for user_id in [u for u, until in self.typing_until.items() if until <= now]:
            await self._typing(user_id, typing=False)
        self._arm_typing_timer()

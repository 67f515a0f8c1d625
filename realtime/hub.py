"""The process's hub: publishes room events, and runs one ordered stream per room that has
subscribers in this process."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict

from graph_db import events as event_log
from graph_db.driver import GraphDB
from graph_db.events import EventRecord, EventType
from graph_db.models import now_ms
from observability.metrics import MESSAGES
from realtime.envelope import Envelope, channel_for
from realtime.presence import MemoryPresence, Presence, PresenceStore
from realtime.pubsub import PubSub
from realtime.stream import Renderer, RoomStream
from realtime.subscriber import Subscriber
from realtime.tasks import spawn

log = logging.getLogger(__name__)
PRUNE_EVERY = 100
UNAVAILABLE = "SERVICE_UNAVAILABLE"
HINTS_KEPT = 1_024


class Hub:
    def __init__(self, pubsub: PubSub, db: GraphDB, *,
                 presence_store: PresenceStore | None = None, presence_grace: float = 3.0,
                 heartbeat_interval: float = 30.0, retention: int = 10_000) -> None:
        self.pubsub = pubsub
        self.db = db
        self.renderer: Renderer | None = None  # set by the transport that renders frames
        self.presence = Presence(presence_store or MemoryPresence(), self._announce_presence,
                                 grace=presence_grace)
        self.heartbeat_interval = heartbeat_interval
        self.retention = retention
        self.streams: dict[str, RoomStream] = {}
        # What a writer already holds of its event's objects, keyed by (room, seq): this
        # process renders its own events without reading them back from the database.
        self.hints: OrderedDict[tuple[str, int], tuple[object, ...]] = OrderedDict()
        # Held only while a stream starts or stops: a room's lock lives as long as someone
        # waits on it (the driver's key locks are the same pattern).
        self._stream_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._heartbeat: asyncio.Task[None] | None = None
        pubsub.on_reconnect(self._resync_all)

    async def start(self) -> None:
        await self.pubsub.start()
        self._heartbeat = asyncio.create_task(self._beat(), name="presence-heartbeat")

    async def close(self) -> None:
        if self._heartbeat:
            self._heartbeat.cancel()
        for stream in list(self.streams.values()):
            await stream.stop()
        self.streams.clear()
        await self.pubsub.close()

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, event: EventRecord, *, hints: tuple[object, ...] = ()) -> None:
        """Announces a committed durable event. A lost announcement is recovered by the
        streams from the event log, so failures are logged, never raised to the writer.
        `hints`: records as they were committed with the event (see `hints`)."""
        if event.type is EventType.MESSAGE_POSTED:  # only a new message has this event
            MESSAGES.inc()
        if hints:
            self.hints[(event.room_id, event.seq)] = hints
            if len(self.hints) > HINTS_KEPT:
                self.hints.popitem(last=False)
        await self._send(Envelope(event))
        if event.seq > self.retention and event.seq % PRUNE_EVERY == 0:
            # The writer of every PRUNE_EVERY-th event trims the log: once, off the hot path.
            spawn(event_log.prune_events(self.db, event.room_id, event.seq - self.retention))

    async def publish_ephemeral(self, room_id: str, type: EventType, user_id: str,
                                **data: object) -> None:
        event = EventRecord(room_id=room_id, seq=0, type=type, at_ms=now_ms(), user_id=user_id)
        await self._send(Envelope(event, dict(data)))

    async def _send(self, envelope: Envelope) -> None:
        try:
            await self.pubsub.publish(channel_for(envelope.event.room_id), envelope.encode())
        except Exception:
            log.warning("publish to room %s failed; streams will catch up from storage",
                        envelope.event.room_id, exc_info=True)

    async def _announce_presence(self, room_id: str, user_id: str, online: bool) -> None:
        await self.publish_ephemeral(room_id, EventType.PRESENCE_CHANGED, user_id, online=online)

    # -- subscribing ---------------------------------------------------------------------

    async def attach(self, sub: Subscriber, after_seq: int | None) -> RoomStream:
        """Adds a subscriber at `after_seq` (None: from now on) and marks its user online.
        Behind the head, it is not live: its owner replays what it missed with
        `stream.catch_up(sub)` (and again whenever the stream says it fell behind)."""
        stream = await self._stream(sub.room_id)
        sub.room_id = stream.room_id  # one string per room, not one per subscription
        if after_seq is None or after_seq >= stream.last_seq:
            sub.delivered_seq = stream.last_seq if after_seq is None else after_seq
            sub.live = sub.delivered_seq >= stream.last_seq
        else:
            sub.delivered_seq = after_seq
        stream.add(sub)
        try:
            await self.presence.join(sub.room_id, sub.user_id)
        except Exception:
            # Presence is advisory (the heartbeat re-records this socket) and the events come
            # from the graph database: a Redis failure must not kill the subscription, which
            # would also leave `sub` in the stream with no detach.
            log.warning("presence join for room %s failed", sub.room_id, exc_info=True)
        return stream

    async def detach(self, sub: Subscriber) -> None:
        stream = self.streams.get(sub.room_id)
        if stream is None:
            return
        stream.remove(sub)
        self.presence.leave(sub.room_id, sub.user_id)
        if stream.subscriber_count == 0:
            await self._drop(sub.room_id, stream)

    def _lock(self, room_id: str) -> asyncio.Lock:
        lock = self._stream_locks.get(room_id)
        if lock is None:
            lock = self._stream_locks[room_id] = asyncio.Lock()
        return lock

    async def _stream(self, room_id: str) -> RoomStream:
        lock = self._lock(room_id)  # a strong reference for as long as it is held
        async with lock:
            stream = self.streams.get(room_id)
            if stream is None:
                assert self.renderer is not None, "no renderer wired"
                stream = RoomStream(room_id, self.db, self.renderer)
                # Subscribe first, then read the head: nothing falls between the two.
                await self.pubsub.subscribe(channel_for(room_id), self._handler(stream))
                try:
                    await stream.start()
                except BaseException:
                    await self.pubsub.unsubscribe(channel_for(room_id))
                    raise
                self.streams[room_id] = stream
            return stream

    async def _drop(self, room_id: str, stream: RoomStream) -> None:
        lock = self._lock(room_id)
        async with lock:
            if stream.subscriber_count or self.streams.get(room_id) is not stream:
                return
            del self.streams[room_id]
            await self.pubsub.unsubscribe(channel_for(room_id))
            await stream.stop()

    @staticmethod
    def _handler(stream: RoomStream):  # type: ignore[no-untyped-def]
        async def handle(raw: bytes) -> None:
            stream.offer(Envelope.decode(raw))

        return handle

    async def _resync_all(self) -> None:
        for stream in list(self.streams.values()):
            stream.resync()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.presence.heartbeat()
            except Exception:
                log.warning("presence heartbeat failed", exc_info=True)

    def database_changed(self, available: bool) -> None:
        """The graph database went away: every subscription is told (SERVICE_UNAVAILABLE,
        retryable) and resumes later with its cursor. Left open, a stream could miss an event
        it cannot read back until the next one comes."""
        if available:
            return
        for stream in list(self.streams.values()):
            stream.end_all(UNAVAILABLE, "the graph database is unreachable: subscribe again "
                                        "with your last cursor shortly")

    def stream_of(self, room_id: str) -> RoomStream | None:
        return self.streams.get(room_id)

    def sizes(self) -> dict[str, int]:
        """How many entries each per-room or per-user map of the hub holds: each drains back
        when its rooms and users go (tests/test_bounded_state.py)."""
        return {"hub.streams": len(self.streams), "hub.stream_locks": len(self._stream_locks),
                "hub.hints": len(self.hints), **self.presence.sizes()}

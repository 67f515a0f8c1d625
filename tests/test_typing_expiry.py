"""A room stream expires typing once, in its own loop: while the loop is busy (a slow render,
a backed-up queue) the expiry timer queues a single tick, not one every 50 ms."""

from __future__ import annotations

import asyncio
from typing import Any

from graph_db.events import EventRecord, EventType
from graph_db.models import now_ms
from realtime.envelope import Envelope
from realtime.stream import RoomStream
from realtime.subscriber import Outbox, Subscriber
from tests.harness import LiveServer
from transport.fanout import frame_prefix


class Recording:
    """Renders every event as its type and data, and can hold the loop on a render."""

    def __init__(self) -> None:
        self.rendered: list[tuple[str, dict[str, Any]]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def render(self, sub: Subscriber, envelope: Envelope, cursor: str) -> str:
        await self.gate.wait()
        self.rendered.append((envelope.event.user_id or "", dict(envelope.data)))
        return '{"data":{"roomEvents":{"__typename":"TypingChanged"}}}'


async def _discard(message: dict[str, Any]) -> None:
    return None


def typing(room_id: str, user_id: str, on: bool) -> Envelope:
    event = EventRecord(room_id, 0, EventType.TYPING_CHANGED, now_ms(), user_id=user_id)
    return Envelope(event, {"typing": on})


async def scenario(live: LiveServer) -> tuple[list[int], list[tuple[str, dict[str, Any]]]]:
    renderer = Recording()
    stream = RoomStream("room-without-events", live.services.db, renderer, typing_ttl=0.2)
    await stream.start()
    sub = Subscriber(room_id=stream.room_id, user_id="watcher", manager=False, admin=False,
                     group_key="g", prefix=frame_prefix("1"),
                     outbox=Outbox(_discard, lambda: True), spec=None, live=True)
    stream.add(sub)
    try:
        stream.offer(typing(stream.room_id, "typer", True))
        while not renderer.rendered:
            await asyncio.sleep(0.01)
        renderer.gate.clear()  # the next render holds the loop
        stream.offer(typing(stream.room_id, "other", True))
        queued = []
        for _ in range(10):  # 1 s of a busy loop, well past the typer's expiry
            await asyncio.sleep(0.1)
            queued.append(stream._queue.qsize())
        renderer.gate.set()
        await asyncio.sleep(0.6)  # both expire and are announced
        return queued, renderer.rendered
    finally:
        await stream.stop()


async def test_typing_expires_once_while_the_loop_is_busy(live: LiveServer) -> None:
    queued, rendered = live.call(scenario(live))
    assert max(queued) <= 1, f"expiry ticks piled up in the queue: {queued}"
    assert rendered == [("typer", {"typing": True}), ("other", {"typing": True}),
                        ("typer", {"typing": False}), ("other", {"typing": False})]

"""One subscription of one socket to one room's stream, and the socket's outbox.

The room loop hands each subscriber a ready frame synchronously; it never awaits a socket.
A socket whose transport is backed up gets its frames queued (bounded); past the bound the
connection is closed, so one slow consumer never delays a room."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol

from realtime.tasks import spawn

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
SLOW_CONSUMER_CODE = 1013  # "try again later": clients reconnect and resume with a cursor
OUTBOX_FRAMES = 512
OUTBOX_BYTES = 1 << 20
ABORT_AFTER_S = 5.0  # a peer that cannot even take the close frame is cut off


def text_frame_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, unfragmented text frame (server to client)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65_536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


class Body:
    """A rendered payload shared by every subscriber of a group: text for the ASGI path,
    UTF-8 encoded once for the direct path."""

    __slots__ = ("_data", "text")

    def __init__(self, payload: str) -> None:
        self.text = payload + "}"
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self.text.encode()
        return self._data


class Outbox:
    """Frames for one WebSocket connection, written in order without blocking the caller.
    One per socket, for as long as it is open: slotted, and its queue made only when the
    transport first backs up (an idle socket holds none)."""

    __slots__ = ("_abort", "_direct", "_drainer", "_max_bytes", "_max_frames", "_queue",
                 "_queued_chars", "_send", "_writable", "closed")

    def __init__(self, send: Send, writable: Callable[[], bool],
                 abort: Callable[[], None] | None = None,
                 direct: Callable[[bytes], bool] | None = None, *,
                 max_frames: int = OUTBOX_FRAMES, max_bytes: int = OUTBOX_BYTES) -> None:
        self._send = send
        self._writable = writable
        self._abort = abort
        # Writes a finished frame to the socket, skipping the server's per-send framing (and
        # our per-subscriber encoding); False when the socket is no longer open.
        self._direct = direct
        self._queue: deque[str] | None = None
        self._queued_chars = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._drainer: asyncio.Task[None] | None = None
        self.closed = False

    async def push_body(self, prefix: str, prefix_data: bytes, body: Body) -> None:
        """The hot path of fan-out: one subscriber's frame of a group's shared body."""
        if self.closed:
            return
        if self._direct is not None and not self._queue and self._writable():
            data = prefix_data + body.data
            if not self._direct(text_frame_header(len(data)) + data):
                self.closed = True
            return
        await self.push(prefix + body.text)

    async def push(self, frame: str) -> None:
        """Writes now when the transport accepts data (uvicorn's send then completes without
        suspending), else queues; never waits for a slow peer."""
        if self.closed:
            return
        queue = self._queue
        if not queue and self._writable():
            try:
                await self._send({"type": "websocket.send", "text": frame})
            except Exception as exc:
                self._lost(exc)
            return
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self._max_frames or self._queued_chars > self._max_bytes:
            self.close(SLOW_CONSUMER_CODE, "slow consumer: reconnect and resume with a cursor")
            return
        queue.append(frame)
        self._queued_chars += len(frame)
        if self._drainer is None:
            self._drainer = spawn(self._drain(queue))

    async def _drain(self, queue: deque[str]) -> None:
        try:
            while queue and not self.closed:
                frame = queue.popleft()
                self._queued_chars -= len(frame)
                await self._send({"type": "websocket.send", "text": frame})
        except Exception as exc:
            self._lost(exc)
        finally:
            self._drainer = None
            if not queue and self._queue is queue:
                self._queue = None  # drained: the socket is back to holding no queue

    def _lost(self, exc: Exception) -> None:
        """A failed send closes the outbox. A peer that went away (the server raises an
        OSError: uvicorn's ClientDisconnected, a reset) is normal and its handler cleans up;
        anything else is a bug worth a stack trace."""
        self.closed = True
        if not isinstance(exc, OSError):
            log.error("websocket send failed", exc_info=exc)

    async def flushed(self, timeout: float) -> None:
        """Waits (at most `timeout`) until every queued frame has been handed to the socket."""
        drainer = self._drainer
        if drainer is not None:
            await asyncio.wait({drainer}, timeout=timeout)

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._queue is not None:
            self._queue.clear()
        self._queued_chars = 0
        log.info("closing websocket: %s", reason)
        spawn(self._close(code, reason))
        if self._abort is not None:
            asyncio.get_running_loop().call_later(ABORT_AFTER_S, self._abort)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            log.debug("close after disconnect", exc_info=True)


class SubscriptionOwner(Protocol):
    """Who runs a subscription (transport/): told when the stream ends it or it fell behind."""

    def ended(self, code: str | None, message: str) -> None:
        """The stream ended the subscription (removed from the room: FORBIDDEN; the room
        closed: None), after taking it out of its groups."""

    def behind(self) -> None:
        """It missed events: replay them from storage (RoomStream.catch_up) until live."""


class Subscriber:
    """What a room stream needs to know of a subscription; transport/ fills in the rest.
    One per subscription for as long as it lives (hours): slotted, and no task or event of
    its own; its owner is called when something has to be done for it."""

    __slots__ = ("admin", "delivered_seq", "group_key", "live", "manager", "outbox", "owner",
                 "prefix", "prefix_data", "room_id", "spec", "user_id")

    def __init__(self, room_id: str, user_id: str, manager: bool, admin: bool,
                 group_key: Hashable, prefix: str, outbox: Outbox, spec: Any, *,
                 delivered_seq: int = 0, live: bool = False,
                 owner: SubscriptionOwner | None = None,
                 prefix_data: bytes | None = None) -> None:
        self.room_id = room_id
        self.user_id = user_id
        self.manager = manager  # sees what only hosts and moderators see (join requests)
        self.admin = admin
        self.group_key = group_key
        self.prefix = prefix  # '{"id":"<op id>","type":"next","payload":' — the frame minus payload
        self.prefix_data = prefix.encode() if prefix_data is None else prefix_data
        self.outbox = outbox
        self.spec = spec  # what transport/ needs to render for this subscriber (and its group)
        self.delivered_seq = delivered_seq
        self.live = live
        self.owner = owner

    def end(self, code: str | None, message: str) -> None:
        if self.owner is not None:
            self.owner.ended(code, message)

    def fell_behind(self) -> None:
        """Missed an event: out of the live fan-out until its owner has it caught up."""
        self.live = False
        if self.owner is not None:
            self.owner.behind()

    async def send_body(self, body: Body) -> None:
        await self.outbox.push_body(self.prefix, self.prefix_data, body)

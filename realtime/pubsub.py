"""The pub/sub port and its in-memory backend (one process; the default)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[None]]
ReconnectHandler = Callable[[], Awaitable[None]]


class PubSub(Protocol):
    """At-most-once delivery of bytes to this process's handlers of a channel.

    Loss is tolerated by design: durable events are in the graph database, and room streams
    fill any gap from there (on a seq jump, and after `on_reconnect`)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, channel: str, message: bytes) -> None: ...
    async def subscribe(self, channel: str, handler: Handler) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    def on_reconnect(self, handler: ReconnectHandler) -> None: ...

    @property
    def connected(self) -> bool: ...


class MemoryPubSub:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()

    async def publish(self, channel: str, message: bytes) -> None:
        handler = self._handlers.get(channel)
        if handler is not None:
            try:
                await handler(message)
            except Exception:  # a subscriber's failure must not fail the publisher
                log.exception("handler for %s failed", channel)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel] = handler

    async def unsubscribe(self, channel: str) -> None:
        self._handlers.pop(channel, None)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True



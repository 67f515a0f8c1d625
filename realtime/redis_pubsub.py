"""The Redis pub/sub backend (REDIS_URL): several service processes share room events.

A thin adapter on redis.asyncio instead of `broadcaster` (0.3.1 delivers nothing on redis-py 8,
never reconnects, and queues without bound). One reader task per process; it reconnects with
back-off by itself and then tells the hub, whose streams re-read what they missed from the
graph database — Redis only announces, the event log is the truth."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.asyncio.client import PubSub as RedisPubSubConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from realtime.pubsub import Handler, ReconnectHandler

log = logging.getLogger(__name__)
CONTROL_CHANNEL = "collab:control"  # keeps the connection subscribed while no room is
MAX_BACKOFF_S = 2.0


class RedisPubSub:
    def __init__(self, url: str) -> None:
        self.url = url
        # Commands (publish, presence) retry once on a fresh connection: after a Redis restart
        # every pooled connection is dead, and from_url's pool retries nothing by default, so
        # each one's next command would fail (a lost announcement, a lost presence update).
        self.redis: Redis = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2,
                                           health_check_interval=10, retry=Retry(NoBackoff(), 1))
        # The subscriber connection must never reconnect behind our back (redis-py would
        # resubscribe silently and the hub would not resync): a pool of its own, no retries.
        self._subscriber = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2,
                                          health_check_interval=10)
        self._handlers: dict[str, Handler] = {}
        self._on_reconnect: list[ReconnectHandler] = []
        self._conn: RedisPubSubConnection | None = None
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._established = False  # a session got connected since the last loss

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._run(), name="redis-pubsub")
        try:  # a clear start-up log line either way; the reader keeps trying regardless
            await asyncio.wait_for(self._connected.wait(), timeout=5)
        except TimeoutError:
            log.warning("Redis at %s not reachable yet; retrying in the background",
                        self._safe_url())

    def _safe_url(self) -> str:
        # Never log a password embedded in the URL.
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._conn is not None:
            await self._conn.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
        await self.redis.aclose()
        await self._subscriber.aclose()

    async def publish(self, channel: str, message: bytes) -> None:
        await self.redis.publish(channel, message)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel] = handler
        async with self._lock:
            if self._conn is not None and self.connected:
                try:
                    await self._conn.subscribe(channel)
                except (RedisError, OSError):
                    log.info("subscribe to %s deferred until Redis is back", channel)

    async def unsubscribe(self, channel: str) -> None:
        self._handlers.pop(channel, None)
        async with self._lock:
            if self._conn is not None and self.connected:
                try:
                    await self._conn.unsubscribe(channel)
                except (RedisError, OSError):
                    log.debug("unsubscribe from %s lost with the connection", channel)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        self._on_reconnect.append(handler)

    async def _run(self) -> None:
        backoff, first = 0.1, True
        while True:
            try:
                await self._session(announce=not first)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # _session has cleared `connected` by now; `_established` remembers that a
                # working connection was lost (warn once, and start the back-off afresh).
                if self._established:
                    self._established = False
                    backoff = 0.1
                    log.warning("Redis pub/sub connection lost (%s); reconnecting", exc)
                self._connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                first = False
                continue
            backoff = 0.1

    async def _session(self, *, announce: bool) -> None:
        conn = self._subscriber.pubsub(ignore_subscribe_messages=True)
        try:
            async with self._lock:
                await conn.subscribe(CONTROL_CHANNEL, *self._handlers)
                self._conn = conn
                self._connected.set()
                self._established = True
            log.info("Redis pub/sub connected (%s)", self._safe_url())
            if announce:
                for handler in self._on_reconnect:
                    await handler()
            while True:
                message = await conn.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    await self._dispatch(message["channel"], message["data"])
        finally:
            self._conn = None
            self._connected.clear()
            await conn.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2

    async def _dispatch(self, channel: bytes | str, data: bytes) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        handler = self._handlers.get(name)
        if handler is None:
            return
        try:
            await handler(data)
        except Exception:
            log.exception("handler for %s failed", name)

"""Where automatic persisted queries are kept: a port (DocumentStore) and its two adapters, a
bounded in-process LRU and Redis (shared by every instance; app.py picks one).

A store is a cache: losing a document only costs a client one retry with the full text, so
a Redis outage degrades to "not found" and never fails an operation."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
KEY_PREFIX = "collab:pq:"
# One document larger than this is executed but never stored: a few huge documents must not
# push every other out of the cache.
MAX_DOCUMENT_BYTES = 256 * 1024


class DocumentStore(Protocol):
    async def get(self, sha256: str) -> str | None: ...

    async def put(self, sha256: str, document: str) -> None: ...

    async def aclose(self) -> None: ...


class MemoryDocumentStore:
    """Least recently used first out, bounded in documents and in bytes."""

    def __init__(self, max_documents: int, max_bytes: int) -> None:
        self.max_documents = max_documents
        self.max_bytes = max_bytes
        self.bytes = 0
        self._documents: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._documents)

    async def get(self, sha256: str) -> str | None:
        document = self._documents.get(sha256)
        if document is not None:
            self._documents.move_to_end(sha256)
        return document

    async def put(self, sha256: str, document: str) -> None:
        size = len(document.encode())
        if sha256 in self._documents or size > min(self.max_bytes, MAX_DOCUMENT_BYTES):
            return
        self._documents[sha256] = document
        self.bytes += size
        while len(self._documents) > self.max_documents or self.bytes > self.max_bytes:
            _, evicted = self._documents.popitem(last=False)
            self.bytes -= len(evicted.encode())

    async def aclose(self) -> None:
        self._documents.clear()


class RedisDocumentStore:
    """One key per document with a TTL that every hit renews (GETEX), so documents in use
    stay and forgotten ones expire."""

    def __init__(self, url: str, ttl_seconds: int) -> None:
        self.ttl = ttl_seconds
        # One retry on a fresh connection: after a Redis restart every pooled one is dead.
        self.redis: Redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                           retry=Retry(NoBackoff(), 1))
        self._failing = False

    async def get(self, sha256: str) -> str | None:
        try:
            value = await self.redis.getex(KEY_PREFIX + sha256, ex=self.ttl)
        except RedisError as exc:
            self._failed("read", exc)
            return None
        self._failing = False
        return value.decode() if isinstance(value, bytes) else None

    async def put(self, sha256: str, document: str) -> None:
        if len(document.encode()) > MAX_DOCUMENT_BYTES:
            return
        try:
            await self.redis.set(KEY_PREFIX + sha256, document, ex=self.ttl)
        except RedisError as exc:
            self._failed("write", exc)
            return
        self._failing = False

    def _failed(self, what: str, exc: RedisError) -> None:
        # Once per outage, not once per request.
        if not self._failing:
            log.warning("persisted queries: Redis %s failed (%s); clients resend documents "
                        "until it is back", what, exc)
        self._failing = True

    async def aclose(self) -> None:
        await self.redis.aclose()

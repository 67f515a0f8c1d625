"""Email digests for people who are not online (issue 11): once the first unread notification
an email would carry is NOTIFICATION_EMAIL_DELAY_SECONDS old and its user has had no live
connection since, one digest (counts and a link, never content: notify/digest.py), at most
one per user per 15 minutes, re-checked at send time.

Through an outbox in the graph (graph_db/digests.py): an SMTP outage delays a digest (retried
with back-off), never loses it; a restart picks pending ones up; a digest is claimed by one
instance at a time, and its Message-ID stays the same on every attempt."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable

from graph_db import digests as outbox
from graph_db.driver import GraphDB
from graph_db.models import now_ms
from notify.digest import Digest, compose
from notify.mailer import Mailer, MailerUnavailable, MailRefused
from observability.metrics import EMAILS

log = logging.getLogger(__name__)
INTERVAL_MS = 15 * 60 * 1000  # at most one digest per user per 15 minutes
STALE_CLAIM_MS = 2 * 60 * 1000  # an instance that claimed and died: another takes over
TICK_S = 15.0
Online = Callable[[list[str]], Awaitable[list[bool]]]


class Unsubscribe:
    """One-click unsubscribe tokens: the user id, signed (no expiry: an old email's link must
    keep working)."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"collab unsubscribe v1", hashlib.sha256).digest()

    def token(self, user_id: str) -> str:
        raw = user_id.encode()
        return _b64(raw) + "." + _b64(hmac.new(self._key, raw, hashlib.sha256).digest()[:16])

    def user_of(self, token: str) -> str | None:
        body, _, sig = token.partition(".")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            return None
        good = _b64(hmac.new(self._key, raw, hashlib.sha256).digest()[:16])
        return raw.decode(errors="replace") if hmac.compare_digest(sig, good) else None


class Digests:
    def __init__(self, db: GraphDB, mailer: Mailer | None, online: Online, *, delay_s: int,
                 sender: str, base_url: str, unsubscribe: Unsubscribe) -> None:
        self.db, self.mailer, self.online = db, mailer, online
        self.delay_ms = delay_s * 1000
        self.sender, self.base_url, self.unsubscribe = sender, base_url.rstrip("/"), unsubscribe
        self.instance = uuid.uuid4().hex[:12]
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.mailer is not None:
            self._task = asyncio.create_task(self._forever(), name="email-digests")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def tick(self) -> int:
        """One round: due digests enqueued, then pending ones sent; how many were sent."""
        await self.enqueue_due()
        return await self.send_pending()

    async def enqueue_due(self) -> int:
        due = await outbox.due(self.db, delay_ms=self.delay_ms, interval_ms=INTERVAL_MS)
        online = await self.online([d.user_id for d in due]) if due else []
        made = 0
        for item, here in zip(due, online, strict=True):
            if here:
                continue  # a live connection: they see it in the app
            if await outbox.enqueue(self.db, uuid.uuid4().hex, item):
                made += 1
        return made

    async def send_pending(self) -> int:
        sent = 0
        for digest in await outbox.claim(self.db, self.instance, stale_ms=STALE_CLAIM_MS):
            if not digest.counts or digest.email is None:
                await outbox.finish(self.db, digest.id, self.instance, "DROPPED")
                continue
            sent += await self._send(digest)
        return sent

    async def _send(self, digest: outbox.Outgoing) -> int:
        assert self.mailer is not None and digest.email is not None
        message = compose(Digest(
            to_address=digest.email, display_name="", counts=digest.counts,
            link=f"{self.base_url}/notifications",
            unsubscribe_url=f"{self.base_url}/notifications/unsubscribe/"
                            f"{self.unsubscribe.token(digest.user_id)}",
            message_id_domain=_domain(self.sender), digest_id=digest.id), self.sender)
        try:
            await self.mailer.send(message)
        except MailerUnavailable as exc:
            backoff = min(3600, 30 * 2 ** min(digest.attempts, 7))
            log.warning("digest %s delayed %d s: %s", digest.id, backoff, exc)
            EMAILS.labels("delayed").inc()
            await outbox.retry(self.db, digest.id, self.instance, now_ms() + backoff * 1000)
            return 0
        except MailRefused as exc:
            log.error("digest %s refused by the mail server: %s", digest.id, exc)
            EMAILS.labels("failed").inc()
            await outbox.finish(self.db, digest.id, self.instance, "FAILED")
            return 0
        EMAILS.labels("sent").inc()
        await outbox.finish(self.db, digest.id, self.instance, "SENT")
        return 1

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
            except Exception:
                log.warning("email digests round failed", exc_info=True)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _domain(sender: str) -> str:
    address = sender.rpartition("<")[2].rstrip(">").strip()
    return address.rpartition("@")[2] or "localhost"

"""The assistant in a room (README "Assistant"): admits a question, builds its request behind
the PHI firewall, stores the reply STREAMING and answers at once; the answer streams in its own
task, and finishes once (durable event, audit record, metrics, the asker's notification).

Cancellation reaches the instance streaming the answer over pub/sub: the asker's or a
moderator's cancelAssistantReply, the asker leaving the room, the room closing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from assistant.backend import MODEL_UNAVAILABLE, TIMEOUT, AIBackend
from assistant.firewall import Person, Vault
from assistant.limits import Grant, QuotaRefused, Quotas
from assistant.prompt import Built, Item, build, estimate_tokens
from assistant.report import Report
from assistant.run import Outcome, Run, ending_of, payload_of
from assistant.upstream import Policy
from graph_db import assistant as store
from graph_db.assistant import ReplyRecord
from graph_db.driver import GraphDB
from graph_db.events import EventRecord, EventType
from graph_db.models import now_ms
from observability.metrics import AI_INFLIGHT
from realtime.hub import Hub
from realtime.pubsub import PubSub

log = logging.getLogger(__name__)
CANCEL_CHANNEL = "collab:assistant:cancel"
SWEEP_EVERY_S = 60.0
RETIRED_MODELS = ("gemini-pro", "gemini-pro-vision", "gemini-1.0-", "gemini-1.5-")
UNAVAILABLE_KEPT_S = 600.0  # after a 404, asks fail at once for this long


class Refused(Exception):
    """askAssistant refused before anything was stored: `code` is the caller's."""

    def __init__(self, code: str, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extensions = extensions


@dataclass(frozen=True, slots=True)
class Question:
    """A participant's question and what their access path read of the room."""

    room_id: str
    asker_id: str
    asker_role: str
    prompt: str
    items: Sequence[Item]
    people: Sequence[Person]
    request_id: str


@dataclass
class _Call:
    question: Question
    reply: ReplyRecord
    vault: Vault
    built: Built
    payload_sha: str  # of the redacted request (audit)
    grant: Grant
    started: float
    task: asyncio.Task[None] | None = None
    reason: str | None = None
    running: bool = False


class Assistant:
    def __init__(self, *, db: GraphDB, hub: Hub, quotas: Quotas, backend: AIBackend | None,
                 policy: Policy, report: Report, model: str, max_input_tokens: int,
                 max_output_tokens: int, stale_after_s: float,
                 notify: Callable[[ReplyRecord], Coroutine[Any, Any, None]] | None = None,
                 ) -> None:
        self.db, self.hub, self.quotas, self.backend = db, hub, quotas, backend
        self.policy, self.report, self.model = policy, report, model
        self.max_input_tokens, self.max_output_tokens = max_input_tokens, max_output_tokens
        self.stale_after_s = stale_after_s
        self.notify = notify
        self.calls: dict[str, _Call] = {}
        self._unavailable_until = 0.0
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def pubsub(self) -> PubSub:
        return self.hub.pubsub

    async def start(self) -> None:
        if self.model.startswith(RETIRED_MODELS):
            log.warning("assistant: AI_MODEL_NAME=%s is a retired model (the API answers 404: "
                        "AI_MODEL_UNAVAILABLE); set a current one", self.model)
        await self.pubsub.subscribe(CANCEL_CHANNEL, self._on_cancel)
        self._sweeper = asyncio.create_task(self._sweep(), name="assistant-sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        calls = list(self.calls.values())
        for call in calls:
            self._cancel_local(call, "shutdown")
        await asyncio.gather(*(c.task for c in calls if c.task), return_exceptions=True)
        await self.pubsub.unsubscribe(CANCEL_CHANNEL)
        await self.quotas.aclose()
        if self.backend is not None:
            await self.backend.aclose()

    # -- asking --------------------------------------------------------------------------

    def check_model(self) -> None:
        """A model the API just answered 404 for (retired or unknown) fails at once."""
        if time.monotonic() < self._unavailable_until:
            raise Refused("AI_MODEL_UNAVAILABLE", f"the model {self.model!r} is not available "
                          "(retired or unknown): set AI_MODEL_NAME to a current model")

    async def ask(self, question: Question) -> ReplyRecord:
        assert self.backend is not None, "checked by the resolver (AI_NOT_CONFIGURED)"
        self.check_model()
        started = time.monotonic()
        reply_id = str(uuid.uuid4())
        # The firewall is pure Python and costs ~0.2 s on a full context: not on the loop.
        vault, built, payload, found = await asyncio.to_thread(self._prepare, question)
        sha = hashlib.sha256(payload).hexdigest()
        if found:  # fail closed: nothing leaves, nothing is stored
            self.report.phi_blocked(question, reply_id, vault, built, sha, found, self.model)
            raise Refused("AI_PHI_BLOCKED", "the question or the discussion holds identifiers "
                          "the firewall could not replace; nothing was sent", types=found)
        estimate = estimate_tokens(payload.decode()) + self.max_output_tokens
        grant = await self._admit(question, reply_id, estimate)
        try:
            reply = await store.create(self.db, reply_id=reply_id, room_id=question.room_id,
                                       asked_by=question.asker_id, prompt=question.prompt,
                                       model=self.model)
        except BaseException:  # the database went away: the slots are not held till the lease
            await self.quotas.finish(grant, 0)
            raise
        if reply is None:
            await self.quotas.finish(grant, 0)
            raise Refused("NOT_FOUND", "room not found")
        call = _Call(question, reply, vault, built, sha, grant, started)
        self.calls[reply_id] = call
        AI_INFLIGHT.inc()
        await self._snapshot(call, "")
        call.task = asyncio.create_task(self._answer(call), name=f"assistant-{reply_id}")
        return reply

    def _prepare(self, question: Question) -> tuple[Vault, Built, bytes, list[str]]:
        """The request through a fresh vault, serialized, and what the leak search finds in
        it."""
        vault = Vault(question.people)
        built = build(vault, question.items, asker_id=question.asker_id,
                      asker_role=question.asker_role, prompt=question.prompt, model=self.model,
                      max_input_tokens=self.max_input_tokens,
                      max_output_tokens=self.max_output_tokens)
        payload = payload_of(built.request)
        return vault, built, payload, vault.leaks(payload)

    async def _admit(self, question: Question, reply_id: str, estimate: int) -> Grant:
        try:
            return await self.quotas.admit(question.asker_id, question.room_id, reply_id,
                                           estimate)
        except QuotaRefused as refused:
            self.report.refused()
            raise Refused(refused.code, _QUOTA_MESSAGES[refused.reason],
                          retryAfter=max(1, round(refused.retry_after)),
                          reason=refused.reason) from None

    # -- answering -----------------------------------------------------------------------

    async def _answer(self, call: _Call) -> None:
        call.running = True  # from here a cancellation lands inside (and is recorded)
        try:
            run = Run(self._backend(), call.built.request, call.vault, self.policy,
                      lambda text: self._snapshot(call, text))
            if call.reason is None:  # else cancelled before it even started
                await run.stream()
            outcome = run.outcome
            outcome.cancelled = call.reason or outcome.cancelled
            if outcome.error is not None and outcome.error.code == MODEL_UNAVAILABLE:
                self._unavailable_until = time.monotonic() + UNAVAILABLE_KEPT_S
            await self._finish(call, outcome)
        except Exception:
            log.exception("assistant reply %s could not be finished", call.reply.id)
        finally:
            self.calls.pop(call.reply.id, None)
            AI_INFLIGHT.dec()

    def _backend(self) -> AIBackend:
        assert self.backend is not None
        return self.backend

    async def _finish(self, call: _Call, outcome: Outcome) -> None:
        ending = ending_of(outcome, call.vault, call.built.sent_ids)
        record, events = await store.finish(self.db, call.reply.id, call.question.room_id,
                                            ending)
        used = (outcome.tokens_in or 0) + (outcome.tokens_out or 0)
        await self.quotas.finish(call.grant, used)
        await self._announce(events)
        self.report.finished(call.question, call.reply.id, call.vault, call.built,
                             call.payload_sha, outcome,
                             model=self.model,
                             started=call.started, citations=ending.citations)
        if record is not None and self.notify is not None:
            await self.notify(record)

    async def _announce(self, events: list[EventRecord]) -> None:
        for event in events:
            await self.hub.publish(event)

    async def _snapshot(self, call: _Call, text: str) -> None:
        data = call.reply.data() | {"text": text}
        await self.hub.publish_ephemeral(call.question.room_id,
                                         EventType.ASSISTANT_REPLY_UPDATED,
                                         call.question.asker_id, reply=data)

    # -- cancelling ----------------------------------------------------------------------

    async def cancel(self, reply_id: str) -> None:
        """Stops the answer wherever it streams; here, waits until it is finished."""
        call = self.calls.get(reply_id)
        if call is not None:
            self._cancel_local(call, "cancelled")
            if call.task is not None:
                await asyncio.gather(call.task, return_exceptions=True)
            return
        await self.pubsub.publish(CANCEL_CHANNEL, orjson.dumps({"reply": reply_id}))

    async def room_changed(self, events: list[EventRecord]) -> None:
        """Leaving the room cancels one's answers; closing it cancels them all."""
        for event in events:
            message: dict[str, str | None]
            if event.type is EventType.PARTICIPANT_LEFT and event.user_id:
                message = {"room": event.room_id, "user": event.user_id, "why": "left"}
            elif event.type is EventType.ROOM_CLOSED:
                message = {"room": event.room_id, "user": None, "why": "closed"}
            else:
                continue
            await self.pubsub.publish(CANCEL_CHANNEL, orjson.dumps(message))

    async def _on_cancel(self, raw: bytes) -> None:
        message = orjson.loads(raw)
        for call in list(self.calls.values()):
            if message.get("reply") == call.reply.id:
                self._cancel_local(call, "cancelled")
            elif message.get("room") == call.question.room_id and message.get("user") in (
                    None, call.question.asker_id):
                self._cancel_local(call, str(message.get("why", "cancelled")))

    @staticmethod
    def _cancel_local(call: _Call, reason: str) -> None:
        """A task cancelled before its first step would never run its `finally` (nor record
        the cancellation): one not yet running finds the reason when it starts."""
        if call.reason is None:
            call.reason = reason
            if call.task is not None and call.running:
                call.task.cancel()

    # -- housekeeping --------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Replies left STREAMING by an instance that died are closed as failed."""
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            with contextlib.suppress(Exception):
                await self.sweep_once()

    async def sweep_once(self) -> None:
        before = now_ms() - int(self.stale_after_s * 1000)
        for reply in await store.stale(self.db, before):
            if reply.id in self.calls:
                continue
            _, events = await store.finish(self.db, reply.id, reply.room_id, store.Ending(
                store.FAILED, reply.text, error_code=TIMEOUT))
            await self._announce(events)

    def sizes(self) -> dict[str, int]:
        return {"assistant.calls": len(self.calls), **self.quotas.sizes()}


_QUOTA_MESSAGES = {
    "user_rate": "you asked the assistant too often: wait retryAfter seconds",
    "room_rate": "this room asked the assistant too often: wait retryAfter seconds",
    "in_flight": "your previous question in this room is still being answered",
    "concurrency": "the assistant is answering too many questions: retry shortly",
    "daily_tokens": "this room's daily assistant budget is spent",
}

"""One answer, streamed: the upstream chunks become throttled snapshots in the room, then one
final state. Runs as its own task (askAssistant has returned); nothing here blocks others.

Snapshots are cumulative (a late joiner needs no earlier one), at most one per UPDATE_EVERY_S,
and never end inside a placeholder: the text shown is restored from the longest safe prefix."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from assistant.backend import AIBackend, AIRequest, Chunk, UpstreamError, guarded_by
from assistant.firewall import Vault, safe_prefix
from assistant.prompt import citations
from assistant.upstream import Attempts, Policy, guarded_stream
from graph_db.assistant import BLOCKED, CANCELLED, COMPLETE, FAILED, Ending

UPDATE_EVERY_S = 0.1
BLOCKED_TEXT = ("The assistant did not answer: the request or the answer was blocked by the "
                "model's safety filters. Rephrase the question, or ask a colleague.")
Publish = Callable[[str], Coroutine[Any, Any, None]]


class PhiOnTheWire(Exception):
    """The last check found a known identifier in the bytes about to be sent."""

    def __init__(self, types: list[str]) -> None:
        super().__init__("known identifiers in the request: " + ", ".join(sorted(set(types))))
        self.types = types


def payload_of(request: AIRequest) -> bytes:
    """The request as the SDK serializes it, near enough for the firewall's search and the
    audit's hash (the wire guard checks the real bytes too)."""
    return orjson.dumps({
        "contents": [{"parts": [{"text": t.text}], "role": t.role} for t in request.turns],
        "systemInstruction": {"parts": [{"text": request.system}], "role": "user"},
        "generationConfig": {"temperature": request.temperature,
                             "maxOutputTokens": request.max_output_tokens},
    })


@dataclass
class Outcome:
    """What the run measured, for the final state, the audit record and the metrics."""

    raw: str = ""  # the model's text, placeholders as sent
    finish_reason: str | None = None
    blocked: bool = False
    tokens_in: int | None = None
    tokens_out: int | None = None
    model_version: str | None = None
    error: UpstreamError | None = None
    phi: list[str] = field(default_factory=list)
    cancelled: str | None = None  # why: cancelled, left, closed, shutdown
    attempts: Attempts = field(default_factory=Attempts)

    def absorb(self, chunk: Chunk) -> None:
        self.raw += chunk.text
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self.blocked = self.blocked or chunk.blocked
        self.tokens_in = chunk.tokens_in if chunk.tokens_in is not None else self.tokens_in
        self.tokens_out = chunk.tokens_out if chunk.tokens_out is not None else self.tokens_out
        self.model_version = chunk.model_version or self.model_version

    @property
    def label(self) -> str:
        """The outcome's name in metrics and the audit record."""
        if self.cancelled:
            return "cancelled"
        if self.phi:
            return "phi_blocked"
        if self.error is not None:
            return "failed"
        if self.blocked or self.finish_reason in SAFETY_REASONS:
            return "blocked"
        # CONTINUATION: the SDK's automatic continuation is off (it would reconnect after
        # text was shown), so the answer stopped short like MAX_TOKENS.
        return ("truncated" if self.finish_reason in ("MAX_TOKENS", "CONTINUATION")
                else "complete")

    @property
    def code(self) -> str | None:
        if self.phi:
            return "AI_PHI_BLOCKED"
        return self.error.code if self.error is not None else None


SAFETY_REASONS = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
                            "RECITATION", "IMAGE_SAFETY"})


def ending_of(outcome: Outcome, vault: Vault, sent_ids: tuple[str, ...]) -> Ending:
    """The reply's final state: what the room was shown stays (cancelled or failed midway),
    a blocked answer is replaced by a neutral text."""
    label = outcome.label
    if label == "blocked":
        return Ending(BLOCKED, BLOCKED_TEXT, finish_reason=outcome.finish_reason or "SAFETY",
                      tokens_in=outcome.tokens_in, tokens_out=outcome.tokens_out)
    text = vault.restore(outcome.raw)
    status = {"cancelled": CANCELLED, "failed": FAILED, "phi_blocked": FAILED}.get(label,
                                                                                 COMPLETE)
    return Ending(status, text, finish_reason=outcome.finish_reason,
                  truncated=label == "truncated", citations=citations(outcome.raw, sent_ids),
                  tokens_in=outcome.tokens_in, tokens_out=outcome.tokens_out,
                  error_code=outcome.code)


class Run:
    """Streams one request; `publish` shows a snapshot of the text in the room."""

    def __init__(self, backend: AIBackend, request: AIRequest, vault: Vault, policy: Policy,
                 publish: Publish) -> None:
        self.backend = backend
        self.request = request
        self.vault = vault
        self.policy = policy
        self.publish = publish
        self.outcome = Outcome()
        self._shown = ""
        self._last_update = 0.0

    def _guard(self, body: bytes, headers: Mapping[str, str]) -> None:
        found = self.vault.leaks(body) + self.vault.leaks(" ".join(headers.values()))
        if found:
            raise PhiOnTheWire(found)

    async def stream(self) -> Outcome:
        """Until the end, an upstream failure or cancellation (recorded, never raised)."""
        stream = guarded_stream(self.backend, self.request, self.policy,
                                self.outcome.attempts)
        try:
            with guarded_by(self._guard):
                async with contextlib.aclosing(stream):  # an early end closes upstream at once
                    async for chunk in stream:
                        self.outcome.absorb(chunk)
                        await self._maybe_update()
        except UpstreamError as error:
            self.outcome.error = error
        except PhiOnTheWire as found:
            self.outcome.phi = found.types
        except asyncio.CancelledError:
            self.outcome.cancelled = self.outcome.cancelled or "cancelled"
            _uncancel()
        return self.outcome

    async def _maybe_update(self) -> None:
        now = time.monotonic()
        if now - self._last_update < UPDATE_EVERY_S:
            return
        raw = self.outcome.raw
        shown = self.vault.restore(raw[:safe_prefix(raw)])
        if shown != self._shown:
            self._shown, self._last_update = shown, now
            await self.publish(shown)


def _uncancel() -> None:
    """The run was cancelled on purpose and goes on to record that: later awaits (the final
    write) must not see the cancellation again."""
    task = asyncio.current_task()
    if task is not None:
        while task.cancelling():
            task.uncancel()

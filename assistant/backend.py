"""The assistant's port to a generative model: what the service sends (AIRequest), what comes
back (Chunk, a delta of text plus the metadata of the final chunk), the one error type
(UpstreamError) and the PHI firewall's last check on the wire (WireGuard).

No SDK is imported here: the service, its tests and other backends code against this module
only (assistant/gemini.py is the google-genai adapter).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "AIBackend", "AIRequest", "Chunk", "Turn", "UpstreamError", "WireGuard", "guarded_by",
    "wire_guard",
]


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "model"]
    text: str


@dataclass(frozen=True, slots=True)
class AIRequest:
    model: str
    system: str
    turns: tuple[Turn, ...]
    max_output_tokens: int = 1024
    temperature: float = 0.2


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str                          # the NEW text of this chunk (a delta), may be ""
    finish_reason: str | None = None   # "STOP", "MAX_TOKENS", "SAFETY", "RECITATION", ...
    blocked: bool = False              # the prompt itself was blocked (no candidates)
    tokens_in: int | None = None       # usage: prompt tokens, when the chunk carries usage
    tokens_out: int | None = None      # usage: candidate tokens
    model_version: str | None = None


# What UpstreamError.code may be.
MODEL_UNAVAILABLE = "AI_MODEL_UNAVAILABLE"   # 404: retired or unknown model (configuration)
RATE_LIMITED = "AI_UPSTREAM_RATE_LIMITED"    # 429
REJECTED = "AI_UPSTREAM_REJECTED"            # other 4xx, credentials refused
UPSTREAM_ERROR = "AI_UPSTREAM_ERROR"         # 5xx, 408, connection errors, an error mid-stream
TIMEOUT = "AI_UPSTREAM_TIMEOUT"              # our own deadlines (assistant/upstream.py)


class UpstreamError(Exception):
    """A failed call to the model.

    code: AI_MODEL_UNAVAILABLE (404/retired model, never retried), AI_UPSTREAM_RATE_LIMITED
    (429), AI_UPSTREAM_REJECTED (other 4xx), AI_UPSTREAM_ERROR (5xx, 408, connection errors,
    an error mid-stream), AI_UPSTREAM_TIMEOUT (our deadlines). status: the HTTP status or
    None. retry_after: seconds (a 429's RetryInfo) or None. retryable: repeating the same
    request may succeed (408/429/5xx/connection errors before any output). The message is
    safe to show: it never carries the upstream body, which may echo the prompt.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable

    def __repr__(self) -> str:
        return (f"UpstreamError({self.code!r}, {self.message!r}, status={self.status!r}, "
                f"retry_after={self.retry_after!r}, retryable={self.retryable!r})")


class AIBackend(Protocol):
    name: str   # "developer" or "vertex"

    def stream(self, request: AIRequest) -> AsyncIterator[Chunk]:
        """The answer as deltas; raises UpstreamError. Closing the iterator (aclose, or
        cancelling the task awaiting it) closes the upstream connection."""
        ...

    async def aclose(self) -> None: ...


class WireGuard(Protocol):
    """The PHI firewall's last check, on the exact bytes about to be sent (every attempt,
    retries included). Raise to abort: nothing is sent and the exception reaches the caller
    as it is. Runs in a worker thread (the adapter keeps the event loop free): it must be
    thread-safe, and must not touch the event loop."""

    def __call__(self, body: bytes, headers: Mapping[str, str]) -> None: ...


# The guard of the call in progress. A ContextVar, so that concurrent calls (each in its own
# task) each have theirs; a backend reads it in the task that sends.
wire_guard: contextvars.ContextVar[WireGuard | None] = contextvars.ContextVar(
    "wire_guard", default=None)


@contextlib.contextmanager
def guarded_by(guard: WireGuard) -> Iterator[None]:
    """`with guarded_by(check): async for chunk in guarded_stream(...)` (same task)."""
    token = wire_guard.set(guard)
    try:
        yield
    finally:
        wire_guard.reset(token)

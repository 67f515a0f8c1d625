"""The service's own policy around a backend: deadlines and retries.

Not the SDK's: its timeout means per read (httpx) or total (aiohttp) depending on the
transport, and its retries ignore a 429's RetryInfo (../shared/notes/gemini.md section 2).

- The whole call, retries and waits included, has `total_s`.
- Each attempt has `first_token_s` until its first chunk with text; once text flows, every gap
  between chunks has `stall_s` (default: first_token_s), so a stall is caught before the
  total deadline when that is far away.
- A deadline gives AI_UPSTREAM_TIMEOUT, never retried (a slow model stays slow).
- Retries (at most `retries`) only while nothing has been yielded: 408/5xx/connection errors
  after an exponential backoff with jitter; a 429 after its retry_after when that fits in what
  is left of the total deadline, otherwise its AI_UPSTREAM_RATE_LIMITED (with retry_after) at
  once. A 404 or another 4xx is never retried, and nothing is retried after output.
- Closing this iterator, or cancelling the task awaiting it, closes the backend's stream (and
  with it the upstream connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from assistant.backend import RATE_LIMITED, TIMEOUT, AIBackend, AIRequest, Chunk, UpstreamError

__all__ = ["Attempts", "Policy", "guarded_stream"]


@dataclass(frozen=True, slots=True)
class Policy:
    total_s: float = 60.0          # whole call (AI_TIMEOUT_SECONDS)
    first_token_s: float = 15.0    # per attempt, until its first chunk with text
    retries: int = 2               # extra attempts, only before anything was yielded
    backoff_s: float = 0.5         # base of the exponential backoff (with jitter)
    stall_s: float | None = None   # longest gap once text flows (None: first_token_s)


@dataclass
class Attempts:                     # filled in while streaming, read afterwards (audit)
    retries: int = 0
    first_token_s: float | None = None   # seconds from start to the first non-empty chunk


async def guarded_stream(backend: AIBackend, request: AIRequest, policy: Policy,
                         attempts: Attempts) -> AsyncGenerator[Chunk, None]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    call = _Call(started, started + policy.total_s, policy)
    while True:
        stream = backend.stream(request)
        try:
            async with contextlib.aclosing(_attempt(stream, call, attempts)) as chunks:
                async for chunk in chunks:
                    call.yielded = True
                    yield chunk
            return
        except UpstreamError as error:
            await _before_retry(error, call)   # or raises
            attempts.retries += 1
        finally:
            await _close(stream)


@dataclass
class _Call:
    started: float
    deadline: float
    policy: Policy
    yielded: bool = False
    failures: int = 0


async def _attempt(stream: AsyncIterator[Chunk], call: _Call,
                   attempts: Attempts) -> AsyncGenerator[Chunk, None]:
    """One attempt's chunks under the deadlines; empty chunks (no text, no news) are dropped."""
    loop = asyncio.get_running_loop()
    policy = call.policy
    stall = policy.first_token_s if policy.stall_s is None else policy.stall_s
    text_since: float | None = None   # when text last arrived (None: not yet)
    limit = loop.time() + policy.first_token_s
    while True:
        timeout = asyncio.timeout_at(min(call.deadline, limit))
        try:
            async with timeout:
                chunk = await anext(stream)
        except StopAsyncIteration:
            return
        except TimeoutError:
            if not timeout.expired():
                raise   # not ours
            raise _timeout(call, first=text_since is None) from None
        if chunk.text:
            now = loop.time()
            if text_since is None and attempts.first_token_s is None:
                attempts.first_token_s = now - call.started
            text_since = now
        if text_since is not None:
            limit = loop.time() + stall
        if (chunk.text or chunk.finish_reason or chunk.blocked or chunk.tokens_in is not None
                or chunk.tokens_out is not None):
            yield chunk


async def _before_retry(error: UpstreamError, call: _Call) -> None:
    """Waits before the next attempt, or raises `error` when there is none."""
    policy = call.policy
    if call.yielded or not error.retryable or call.failures >= policy.retries:
        raise error
    left = call.deadline - asyncio.get_running_loop().time()
    if error.code == RATE_LIMITED and error.retry_after is not None:
        # The server said when; earlier is wasted (and counts against the quota).
        wait = error.retry_after
    else:
        wait = policy.backoff_s * 2 ** call.failures * random.uniform(0.5, 1.0)
    if wait >= left:
        raise error
    call.failures += 1
    await asyncio.sleep(wait)


def _timeout(call: _Call, *, first: bool) -> UpstreamError:
    loop_time = asyncio.get_running_loop().time()
    if loop_time >= call.deadline:
        what = f"no complete answer within {call.policy.total_s:g} s"
    elif first:
        what = f"no answer within {call.policy.first_token_s:g} s"
    else:
        what = "the answer stalled"
    return UpstreamError(TIMEOUT, f"The AI service timed out: {what}.")


async def _close(stream: AsyncIterator[Chunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()

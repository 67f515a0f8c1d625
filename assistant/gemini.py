"""The Gemini adapter: assistant.backend's port over google-genai (the only module importing
it), for the Developer API and Vertex AI alike.

Measured SDK behaviour this relies on (../shared/notes/gemini.md section 2, google-genai 3.6):
- Its transport is pinned to an httpx.AsyncClient of ours. Otherwise the SDK picks one itself:
  httpx2 by default, aiohttp whenever aiohttp is importable, and the meaning of its timeout
  changes with it (per read or total). Ours carries the request hook that runs the WireGuard
  on the bytes about to be sent, so no request can bypass the firewall's last check.
- Its retries are off (one attempt; they ignore a 429's RetryInfo anyway) and its timeout
  unused: deadlines and retries are the service's (assistant/upstream.py).
- Streaming errors surface on the first iteration (an HTTP error) or mid-stream (an error
  object after some chunks), as google.genai.errors.APIError.
- Closing the SDK's async iterator while it is suspended at a yield leaves the HTTP response
  open until the garbage collector finds its generators (a reference cycle), while cancelling
  a task awaiting inside it closes the connection at once. So the SDK is iterated in a task
  of its own, which stream() cancels when it ends early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

import google.auth.credentials
import google.auth.exceptions
import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from assistant.backend import (
    MODEL_UNAVAILABLE,
    RATE_LIMITED,
    REJECTED,
    UPSTREAM_ERROR,
    AIRequest,
    Chunk,
    UpstreamError,
    wire_guard,
)
from settings import Settings

__all__ = ["GeminiBackend", "application_default_credentials", "backend_from_settings",
           "wire_guard"]
log = logging.getLogger(__name__)

# The SDK passes timeout=None on every request, which would disable httpx's timeouts (connect
# included); the request hook puts these back. No read timeout: stalls are the service's
# deadlines. A bounded connect lets an unreachable endpoint fail as a retryable error in time.
TRANSPORT_TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=10.0)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")
# Credentials that cannot produce a token: configuration, not a passing failure.
_AUTH_REFUSED = (google.auth.exceptions.RefreshError,
                 google.auth.exceptions.DefaultCredentialsError)


class GeminiBackend:
    """One per process: the service builds it in the app's lifespan and aclose()s it there."""

    def __init__(self, *, backend: Literal["developer", "vertex"], api_key: str | None,
                 project: str | None, location: str | None, base_url: str | None,
                 credentials: google.auth.credentials.Credentials | None = None) -> None:
        self.name: str = backend
        self._http = httpx.AsyncClient(event_hooks={"request": [_before_send]},
                                       timeout=TRANSPORT_TIMEOUT, follow_redirects=False)
        options = types.HttpOptions(base_url=base_url, httpx_async_client=self._http,
                                    retry_options=types.HttpRetryOptions(attempts=1))
        # vertexai is always explicit: GOOGLE_GENAI_USE_VERTEXAI must not switch APIs (and
        # with it the BAA's scope) behind the configuration's back.
        if backend == "vertex":
            self._client = genai.Client(vertexai=True, project=project, location=location,
                                        credentials=credentials, http_options=options)
        else:
            self._client = genai.Client(vertexai=False, api_key=api_key, http_options=options)
        if not sends_through(self._client, self._http):
            raise RuntimeError("google-genai would not send through the pinned httpx client "
                               "(an SDK change?): refusing to run without the wire guard")

    async def stream(self, request: AIRequest) -> AsyncIterator[Chunk]:
        chunks: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()
        # Created here, in the caller's task, so the producer's context copy has its wire_guard.
        producer = asyncio.create_task(self._produce(request, chunks),
                                       name=f"gemini-stream:{request.model}")
        try:
            while (item := await chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Cancelling lands inside the SDK's read (the producer never waits elsewhere:
            # the queue is unbounded), whose finally blocks close the HTTP response.
            producer.cancel()
            await asyncio.wait({producer})

    async def _produce(self, request: AIRequest,
                       chunks: asyncio.Queue[Chunk | BaseException | None]) -> None:
        delivered = False
        try:
            responses = await self._client.aio.models.generate_content_stream(
                model=request.model, contents=_contents(request), config=_config(request))
            async for response in responses:
                chunks.put_nowait(_chunk(response))
                delivered = True
            chunks.put_nowait(None)
        except genai_errors.APIError as exc:
            chunks.put_nowait(_api_error(exc, request.model, mid_stream=delivered))
        except (httpx.RequestError, google.auth.exceptions.TransportError) as exc:
            chunks.put_nowait(_transport_error(exc, mid_stream=delivered))
        except _AUTH_REFUSED:
            chunks.put_nowait(UpstreamError(
                REJECTED, "The AI service's credentials were refused or are missing."))
        except Exception as exc:  # the WireGuard's own exception, among others: as it is
            chunks.put_nowait(exc)

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        self._client.close()   # the sync httpx client the SDK built for itself (never used)
        await self._http.aclose()


def application_default_credentials() -> google.auth.credentials.Credentials:
    """Vertex AI's credentials, found at start-up (a missing one is AI_NOT_CONFIGURED, not a
    failure of every question); raises DefaultCredentialsError."""
    credentials, _ = google.auth.default(
        scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return credentials


def sends_through(client: genai.Client, http: httpx.AsyncClient) -> bool:
    """Whether the SDK's async requests go through `http`. The one place that reads SDK
    internals (tests/test_gemini_backend.py fails loudly when they move)."""
    api = getattr(client, "_api_client", None)
    use_aiohttp = getattr(api, "_use_aiohttp", None)
    return (getattr(api, "_async_httpx_client", None) is http and callable(use_aiohttp)
            and use_aiohttp() is False)


async def _before_send(request: httpx.Request) -> None:
    """httpx's request hook: runs before anything of the request is sent."""
    body = await request.aread()   # already in memory: the SDK sends bytes
    guard = wire_guard.get()
    if guard is not None:
        # A copy of the headers: what is checked is what is sent. In a worker thread: a full
        # request's leak search takes tens of milliseconds the event loop must not stand.
        await asyncio.to_thread(guard, body, httpx.Headers(request.headers))
    request.extensions = {**request.extensions, "timeout": TRANSPORT_TIMEOUT.as_dict()}


def _contents(request: AIRequest) -> list[types.Content]:
    return [types.Content(role=turn.role, parts=[types.Part(text=turn.text)])
            for turn in request.turns]


def _config(request: AIRequest) -> types.GenerateContentConfig:
    # No tools, so no function calling; no automatic continuation either, whose follow-up
    # requests (reconnects after output included) would be retries the service did not decide.
    return types.GenerateContentConfig(
        system_instruction=request.system or None, temperature=request.temperature,
        max_output_tokens=request.max_output_tokens,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        automatic_continuation=False)


def _chunk(response: types.GenerateContentResponse) -> Chunk:
    candidate = response.candidates[0] if response.candidates else None
    parts = (candidate.content.parts if candidate and candidate.content
             and candidate.content.parts else [])
    finish = candidate.finish_reason if candidate else None
    feedback = response.prompt_feedback
    block = feedback.block_reason if feedback else None
    usage = response.usage_metadata
    return Chunk(
        # Thoughts are not the answer.
        text="".join(part.text for part in parts if part.text and not part.thought),
        finish_reason=(None if finish in (None, types.FinishReason.FINISH_REASON_UNSPECIFIED)
                       else str(finish.value)),
        blocked=block not in (None, types.BlockedReason.BLOCKED_REASON_UNSPECIFIED),
        tokens_in=usage.prompt_token_count if usage else None,
        tokens_out=usage.candidates_token_count if usage else None,
        model_version=response.model_version)


def _api_error(exc: genai_errors.APIError, model: str, *, mid_stream: bool) -> UpstreamError:
    status, name = exc.code, exc.status or "UNKNOWN"
    if mid_stream:
        return UpstreamError(UPSTREAM_ERROR, f"The AI service failed mid-answer ({status} "
                             f"{name}).", status=status)
    if status == 404:
        return UpstreamError(MODEL_UNAVAILABLE, f"The AI model {model!r} is not available "
                             "(retired or unknown): check the configuration.", status=status)
    if status == 429:
        return UpstreamError(RATE_LIMITED, "The AI service is rate limited.", status=status,
                             retry_after=_retry_after(exc), retryable=True)
    if status == 408 or status >= 500:
        return UpstreamError(UPSTREAM_ERROR, f"The AI service failed ({status} {name}).",
                             status=status, retryable=True)
    return UpstreamError(REJECTED, f"The AI service rejected the request ({status} {name}).",
                         status=status)


def _transport_error(exc: Exception, *, mid_stream: bool) -> UpstreamError:
    where = "mid-answer" if mid_stream else "before answering"
    return UpstreamError(UPSTREAM_ERROR, f"The connection to the AI service failed {where} "
                         f"({type(exc).__name__}).", retryable=not mid_stream)


def _retry_after(exc: genai_errors.APIError) -> float | None:
    """google.rpc.RetryInfo's retryDelay ("7s", "1.5s"), else a numeric Retry-After header."""
    details: Any = exc.details
    error = details.get("error", details) if isinstance(details, dict) else {}
    items = error.get("details") if isinstance(error, dict) else None
    for item in items if isinstance(items, list) else []:
        if (isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo")
                and (match := _DURATION.match(str(item.get("retryDelay", ""))))):
            return float(match[1])
    headers = getattr(exc.response, "headers", None)
    with contextlib.suppress(TypeError, ValueError):
        value = headers.get("retry-after") if headers is not None else None
        return float(value) if value is not None else None
    return None


def backend_from_settings(settings: Settings) -> GeminiBackend | None:
    """Gemini on Vertex AI or the Developer API; None (AI_NOT_CONFIGURED) without what the
    backend needs."""
    key = settings.gemini_api_key.get_secret_value() if settings.gemini_api_key else None
    vertex = settings.ai_backend == "vertex"
    if (vertex and not settings.google_cloud_project) or (not vertex and not key):
        log.warning("assistant: on but NOT CONFIGURED (%s): askAssistant answers "
                    "AI_NOT_CONFIGURED", "GOOGLE_CLOUD_PROJECT" if vertex else "GEMINI_API_KEY")
        return None
    try:
        backend = GeminiBackend(backend=settings.ai_backend, api_key=None if vertex else key,
                                project=settings.google_cloud_project,
                                location=settings.google_cloud_location,
                                base_url=settings.gemini_base_url,
                                credentials=application_default_credentials() if vertex
                                else None)
    except Exception as exc:  # no application default credentials, for one
        log.warning("assistant: NOT CONFIGURED: %s", exc)
        return None
    log.info("assistant: %s on %s%s", settings.ai_model_name, settings.ai_backend,
             f" through {settings.gemini_base_url}" if settings.gemini_base_url else "")
    return backend

"""The Gemini backend (assistant/gemini.py) and the service's deadlines and retries around it
(assistant/upstream.py): the real google-genai SDK over real HTTP against tests/fake_gemini.py,
for the Developer API and Vertex AI (static credentials, no network, no ADC)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING

import httpx
import pytest
from google import genai
from google.genai import _api_client, types
from google.oauth2.credentials import Credentials

from assistant.backend import AIRequest, Chunk, Turn, UpstreamError, guarded_by
from assistant.gemini import GeminiBackend, sends_through, wire_guard
from assistant.upstream import Attempts, Policy, guarded_stream

if TYPE_CHECKING:
    from tests.fake_gemini import FakeGemini

# The fixtures fake_gemini_server (one per session) and fake_gemini (reset for each test).

KEY = "AIza-TEST-KEY-0123456789"
TOKEN = "ya29.FAKE"
FAST = Policy(total_s=5.0, first_token_s=2.0, retries=2, backoff_s=0.05)
REPLY = "Based on [m:101] and [m:103], consider checking HbA1c. Please verify."


def make_backend(api: str, url: str) -> GeminiBackend:
    if api == "vertex":
        return GeminiBackend(backend="vertex", api_key=None, project="proj-x",
                             location="us-central1", base_url=url,
                             credentials=Credentials(token=TOKEN))
    return GeminiBackend(backend="developer", api_key=KEY, project=None, location=None,
                         base_url=url)


@pytest.fixture(params=["developer", "vertex"])
async def backend(request: pytest.FixtureRequest,
                  fake_gemini: FakeGemini) -> AsyncIterator[GeminiBackend]:
    gemini = make_backend(request.param, fake_gemini.url)
    yield gemini
    await gemini.aclose()


@pytest.fixture
async def developer(fake_gemini: FakeGemini) -> AsyncIterator[GeminiBackend]:
    gemini = make_backend("developer", fake_gemini.url)
    yield gemini
    await gemini.aclose()


def ask(model: str, text: str = "Summarise [m:101] and [m:103].") -> AIRequest:
    return AIRequest(model=model, system="You are a careful assistant.",
                     turns=(Turn("user", "[m:100] earlier question"), Turn("model", "earlier"),
                            Turn("user", text)),
                     max_output_tokens=256, temperature=0.2)


async def collect(backend: GeminiBackend, model: str, policy: Policy = FAST,
                  attempts: Attempts | None = None, into: list[Chunk] | None = None) -> list[Chunk]:
    chunks = [] if into is None else into
    async for chunk in guarded_stream(backend, ask(model), policy, attempts or Attempts()):
        chunks.append(chunk)
    return chunks


async def failure(backend: GeminiBackend, model: str, policy: Policy = FAST,
                  attempts: Attempts | None = None,
                  into: list[Chunk] | None = None) -> UpstreamError:
    with pytest.raises(UpstreamError) as raised:
        await collect(backend, model, policy, attempts, into)
    return raised.value


# -- answers -------------------------------------------------------------------------------------

async def test_a_streamed_answer_in_chunks_with_usage(backend: GeminiBackend,
                                                      fake_gemini: FakeGemini) -> None:
    attempts = Attempts()
    chunks = await collect(backend, "fake-ok", attempts=attempts)
    assert [c.text for c in chunks] == ["Based on ", "[m:101] and [m:103]",
                                        ", consider checking HbA1c.", " Please verify."]
    assert [c.finish_reason for c in chunks] == [None, None, None, "STOP"]
    (sent,) = fake_gemini.requests
    last = chunks[-1]
    assert last.tokens_in == len(sent.raw) // 4 and last.tokens_out == len(REPLY) // 4
    assert last.model_version == "fake-ok-fake-001" and not last.blocked
    assert attempts.retries == 0
    assert attempts.first_token_s is not None and 0 < attempts.first_token_s < 2


async def test_what_goes_on_the_wire(backend: GeminiBackend, fake_gemini: FakeGemini) -> None:
    await collect(backend, "fake-ok")
    (sent,) = fake_gemini.requests
    assert sent.method == "POST" and sent.query == "alt=sse" and sent.stream
    assert sent.body["systemInstruction"] == {"parts": [{"text": "You are a careful assistant."}],
                                              "role": "user"}
    assert sent.body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 256}
    assert [c["role"] for c in sent.body["contents"]] == ["user", "model", "user"]
    # Nothing the SDK handles itself (continuation, function calling) reaches the body.
    assert set(sent.body) == {"contents", "systemInstruction", "generationConfig"}
    if backend.name == "developer":
        assert sent.api == "developer"
        assert sent.path == "/v1/models/fake-ok:streamGenerateContent"
        assert sent.headers["x-goog-api-key"] == KEY and "authorization" not in sent.headers
    else:
        assert sent.api == "vertex"
        assert sent.path == ("/v1beta1/projects/proj-x/locations/us-central1/publishers/google/"
                             "models/fake-ok:streamGenerateContent")
        assert sent.headers["authorization"] == f"Bearer {TOKEN}"
        assert "x-goog-api-key" not in sent.headers
    assert KEY not in sent.path + sent.query and TOKEN not in sent.path + sent.query
    assert "x-server-timeout" not in sent.headers   # the SDK's timeout is not used


async def test_finish_reasons_and_a_blocked_prompt(backend: GeminiBackend) -> None:
    safety = await collect(backend, "fake-safety")
    assert [c.text for c in safety] == ["Regarding the "]
    assert safety[-1].finish_reason == "SAFETY"
    truncated = await collect(backend, "fake-max-tokens")
    assert "".join(c.text for c in truncated) == "The first part of a long answer"
    assert truncated[-1].finish_reason == "MAX_TOKENS"
    (blocked,) = await collect(backend, "fake-blocked")
    assert blocked.blocked and blocked.text == "" and blocked.finish_reason is None
    assert blocked.tokens_in is not None


# -- errors and retries --------------------------------------------------------------------------

async def test_a_retired_model_is_a_configuration_error_never_retried(
        backend: GeminiBackend, fake_gemini: FakeGemini) -> None:
    error = await failure(backend, "gemini-pro")
    assert (error.code, error.status, error.retryable) == ("AI_MODEL_UNAVAILABLE", 404, False)
    assert "gemini-pro" in error.message and "ListModels" not in error.message
    assert len(fake_gemini.requests) == 1


async def test_429_waits_for_its_retry_info_when_that_fits(backend: GeminiBackend,
                                                           fake_gemini: FakeGemini) -> None:
    fake_gemini.script("fake-429", fail_times=1, retry_delay="1s")
    attempts = Attempts()
    chunks = await collect(backend, "fake-429", attempts=attempts)
    assert "".join(c.text for c in chunks) == REPLY
    first, second = fake_gemini.requests
    assert second.at - first.at >= 1.0
    assert attempts.retries == 1


async def test_429_fails_at_once_when_its_delay_does_not_fit(backend: GeminiBackend,
                                                             fake_gemini: FakeGemini) -> None:
    fake_gemini.script("fake-429", retry_delay="30s")
    started = time.monotonic()
    error = await failure(backend, "fake-429")
    assert (error.code, error.status, error.retry_after) == ("AI_UPSTREAM_RATE_LIMITED", 429, 30)
    assert time.monotonic() - started < 1
    assert len(fake_gemini.requests) == 1


async def test_fractional_retry_delay(developer: GeminiBackend, fake_gemini: FakeGemini) -> None:
    fake_gemini.script("fake-429", retry_delay="1.5s")
    with pytest.raises(UpstreamError) as raised:
        async for _ in developer.stream(ask("fake-429")):
            pass
    assert raised.value.retry_after == 1.5 and raised.value.retryable


async def test_500_is_retried_then_reported(backend: GeminiBackend,
                                            fake_gemini: FakeGemini) -> None:
    attempts = Attempts()
    error = await failure(backend, "fake-500", attempts=attempts)
    assert (error.code, error.status, error.retryable) == ("AI_UPSTREAM_ERROR", 500, True)
    assert "Internal error encountered" not in error.message   # not the upstream's words
    assert len(fake_gemini.requests) == FAST.retries + 1 and attempts.retries == FAST.retries


async def test_500_then_ok_succeeds_on_a_retry(backend: GeminiBackend,
                                               fake_gemini: FakeGemini) -> None:
    attempts = Attempts()
    chunks = await collect(backend, "fake-500-then-ok", attempts=attempts)
    assert "".join(c.text for c in chunks) == REPLY
    assert attempts.retries == 2 and len(fake_gemini.requests) == 3


async def test_no_retry_when_the_backoff_does_not_fit(developer: GeminiBackend,
                                                      fake_gemini: FakeGemini) -> None:
    started = time.monotonic()
    error = await failure(developer, "fake-500", Policy(total_s=0.5, backoff_s=2.0))
    assert error.code == "AI_UPSTREAM_ERROR" and time.monotonic() - started < 0.4
    assert len(fake_gemini.requests) == 1


async def test_an_error_mid_stream_is_reported_after_the_chunks_never_retried(
        backend: GeminiBackend, fake_gemini: FakeGemini) -> None:
    chunks: list[Chunk] = []
    error = await failure(backend, "fake-error-mid", into=chunks)
    assert [c.text for c in chunks] == ["Based on ", "[m:101] and [m:103]"]
    assert (error.code, error.retryable) == ("AI_UPSTREAM_ERROR", False)
    assert len(fake_gemini.requests) == 1


async def test_an_unreachable_endpoint_is_a_retried_connection_error() -> None:
    with socket_closed() as url:
        gemini = make_backend("developer", url)
        try:
            attempts = Attempts()
            error = await failure(gemini, "fake-ok", attempts=attempts)
        finally:
            await gemini.aclose()
    assert (error.code, error.status, error.retryable) == ("AI_UPSTREAM_ERROR", None, True)
    assert "ConnectError" in error.message and attempts.retries == FAST.retries


@contextlib.contextmanager
def socket_closed() -> Iterator[str]:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


# -- deadlines -----------------------------------------------------------------------------------

async def test_no_first_token_in_time(backend: GeminiBackend, fake_gemini: FakeGemini) -> None:
    started = time.monotonic()
    error = await failure(backend, "fake-slow-first", Policy(total_s=5, first_token_s=0.3))
    elapsed = time.monotonic() - started
    assert (error.code, error.retryable) == ("AI_UPSTREAM_TIMEOUT", False)
    assert 0.3 <= elapsed < 1.0 and len(fake_gemini.requests) == 1
    await fake_gemini.wait_disconnect(1.0)   # and the request was abandoned, not left open


async def test_a_stall_inside_the_stream_meets_the_total_deadline(
        backend: GeminiBackend, fake_gemini: FakeGemini) -> None:
    chunks: list[Chunk] = []
    started = time.monotonic()
    error = await failure(backend, "fake-stall", Policy(total_s=1.0, first_token_s=4.0),
                          into=chunks)
    assert error.code == "AI_UPSTREAM_TIMEOUT" and "1 s" in error.message
    assert 1.0 <= time.monotonic() - started < 1.6
    assert [c.text for c in chunks] == ["Based on "]   # what came before stays delivered
    assert len(fake_gemini.requests) == 1             # never retried after output
    assert (await fake_gemini.wait_disconnect(1.0)).chunks_sent == 1


async def test_a_stall_meets_the_gap_limit_first(developer: GeminiBackend,
                                                 fake_gemini: FakeGemini) -> None:
    started = time.monotonic()
    error = await failure(developer, "fake-stall",
                          Policy(total_s=10, first_token_s=2.0, stall_s=0.4))
    assert error.code == "AI_UPSTREAM_TIMEOUT" and "stalled" in error.message
    assert 0.4 <= time.monotonic() - started < 1.0


# -- cancellation --------------------------------------------------------------------------------

async def test_cancelling_the_consumer_closes_the_upstream_connection(
        backend: GeminiBackend, fake_gemini: FakeGemini) -> None:
    fake_gemini.script("fake-drip", chunks=["a", "b", "c", "d", "e", "f"], delay=0.3)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in guarded_stream(backend, ask("fake-drip"), FAST, Attempts()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2)
    cancelled = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gone = await fake_gemini.wait_disconnect(1.0)
    assert gone.at - cancelled < 0.3 and gone.chunks_sent < 6


@pytest.mark.parametrize("closing", ["aclose", "abandoned"])
async def test_a_consumer_cancelled_between_chunks_closes_it_too(
        developer: GeminiBackend, fake_gemini: FakeGemini, closing: str) -> None:
    """Cancelled while busy with a chunk (publishing it): the stream waits at a yield. Closed
    explicitly or dropped (then asyncio's async-generator finalizer closes it), the upstream
    connection goes at once: the SDK's own iterator would hold it until a GC pass."""
    fake_gemini.script("fake-drip", chunks=["a", "b", "c", "d", "e", "f"], delay=0.3)
    busy = asyncio.Event()

    async def consume() -> None:
        chunks = guarded_stream(developer, ask("fake-drip"), FAST, Attempts())
        try:
            async for _ in chunks:
                busy.set()
                await asyncio.sleep(10)   # the consumer's own work
        finally:
            if closing == "aclose":
                await chunks.aclose()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(busy.wait(), 2)
    cancelled = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gone = await fake_gemini.wait_disconnect(1.0)
    assert gone.at - cancelled < 0.3


# -- the wire guard and the pinned transport -----------------------------------------------------

class Leak(Exception):
    pass


class Checked(list[bytes]):
    """A WireGuard that lets everything through, keeping the bodies it saw."""

    def __call__(self, body: bytes, headers: Mapping[str, str]) -> None:
        self.append(body)


async def test_a_raising_wire_guard_sends_nothing(backend: GeminiBackend,
                                                  fake_gemini: FakeGemini) -> None:
    leak = Leak("PHI on the wire")
    seen: list[bytes] = []

    def guard(body: bytes, headers: Mapping[str, str]) -> None:
        seen.append(body)
        raise leak

    with guarded_by(guard), pytest.raises(Leak) as raised:
        await collect(backend, "fake-ok")
    assert raised.value is leak        # as it was raised: not wrapped, not retried
    assert len(seen) == 1 and b"[m:101]" in seen[0]
    assert fake_gemini.requests == []
    assert wire_guard.get() is None


async def test_the_guard_sees_exactly_what_is_sent_on_every_attempt(
        backend: GeminiBackend, fake_gemini: FakeGemini) -> None:
    checked: list[tuple[bytes, dict[str, str]]] = []

    def guard(body: bytes, headers: Mapping[str, str]) -> None:
        checked.append((body, {k.lower(): v for k, v in headers.items()}))

    with guarded_by(guard):
        await collect(backend, "fake-500-then-ok")
    assert [body for body, _ in checked] == [r.raw for r in fake_gemini.requests]
    assert len(checked) == 3
    auth = "x-goog-api-key" if backend.name == "developer" else "authorization"
    assert all(auth in headers for _, headers in checked)


async def test_the_pinned_httpx_client_even_when_aiohttp_is_importable(
        fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> None:
    """With aiohttp importable the SDK switches to it by itself (and its timeout to a total
    one). If aiohttp is installed the other tests already run so; otherwise the SDK is made to
    believe it is (and would fail on the missing module if it went that way)."""
    if importlib.util.find_spec("aiohttp") is None:
        monkeypatch.setattr(_api_client, "has_aiohttp", True)
    for api in ("developer", "vertex"):
        gemini = make_backend(api, fake_gemini.url)
        checked = Checked()
        try:
            with guarded_by(checked):
                chunks = await collect(gemini, "fake-ok")
        finally:
            await gemini.aclose()
        assert "".join(c.text for c in chunks) == REPLY and len(checked) == 1


async def test_the_sdk_internals_read_for_the_pinned_transport_still_exist(
        fake_gemini: FakeGemini) -> None:
    """sends_through() reads google-genai internals (_api_client, _async_httpx_client,
    _use_aiohttp). If an upgrade moves them, GeminiBackend refuses to start: this says why."""
    ours = httpx.AsyncClient()
    pinned = genai.Client(api_key=KEY, http_options=types.HttpOptions(
        base_url=fake_gemini.url, httpx_async_client=ours))
    own = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=fake_gemini.url))
    try:
        assert sends_through(pinned, ours)
        assert not sends_through(own, ours)
    finally:
        await own.aio.aclose()
        own.close()
        pinned.close()
        await ours.aclose()


async def test_the_fake_answers_non_streaming_calls_too(fake_gemini: FakeGemini) -> None:
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=fake_gemini.url))
    try:
        answer = await client.aio.models.generate_content(model="fake-ok", contents="[m:7] hi")
    finally:
        await client.aio.aclose()
    assert answer.text == "Based on [m:7], consider checking HbA1c. Please verify."
    assert fake_gemini.requests[0].path == "/v1/models/fake-ok:generateContent"

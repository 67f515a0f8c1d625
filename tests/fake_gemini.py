"""A fake Gemini server for tests: the Developer API and Vertex AI's generateContent and
streamGenerateContent (SSE) over real HTTP, with the behaviour chosen by the model name.

Scenarios (any other model name answers like `fake-ok`):
  fake-ok            3-4 chunks echoing the [m:ID] tags of the last user turn, finish STOP
  fake-429           429 RESOURCE_EXHAUSTED with google.rpc.RetryInfo retryDelay "1s"
  fake-500           500 INTERNAL, always
  fake-500-then-ok   500 twice (per model, counted since reset()), then fake-ok
  fake-slow-first    nothing at all (not even the status line) for 2 s
  fake-stall         a 5 s gap after the first chunk
  fake-error-mid     an error object (500 INTERNAL) after 2 chunks
  fake-safety        finishReason SAFETY after one chunk
  fake-blocked       promptFeedback.blockReason SAFETY, no candidates
  fake-max-tokens    finishReason MAX_TOKENS
  gemini-pro         404 NOT_FOUND with the real API's message (a retired model)

A test changes any of them, or makes its own: `fake.script("fake-429", retry_delay="30s")`,
`fake.script("my-model", chunks=["a", "b"], delay=0.2)`. Every request is recorded
(`fake.requests`), and so is every stream whose client went away before its end
(`fake.disconnects`, `await fake.wait_disconnect()`). `fake.reset()` forgets both and the
scripts.

Pytest: add "tests.fake_gemini" to `pytest_plugins` for the fixtures `fake_gemini_server`
(one server per session, in a thread of its own) and `fake_gemini` (the same, reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

_DEVELOPER = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):(\w+)$")
_VERTEX = re.compile(
    r"^/(v1|v1beta1)/(?:projects/([^/]+)/locations/([^/]+)/)?publishers/google/models/"
    r"([^/:]+):(\w+)$")
_TAG = re.compile(r"\[m:[^\]\s]+\]")
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 408: "DEADLINE_EXCEEDED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass(frozen=True)
class Scenario:
    text: tuple[str, ...] | None = None  # the reply's chunks; None: echo the [m:ID] tags
    delay: float = 0.0                   # before each chunk but the first
    first_delay: float = 0.0             # before anything (status line included)
    stall_after: int | None = None       # a gap of `stall` seconds after this many chunks
    stall: float = 0.0
    finish: str = "STOP"
    status: int | None = None            # answer this HTTP error status...
    fail_times: int | None = None        # ...the first N times (None: always)
    retry_delay: str | None = None       # the 429's RetryInfo.retryDelay
    message: str | None = None           # the error's message
    error_after: int | None = None       # an error object after this many chunks
    blocked: str | None = None           # promptFeedback.blockReason (no candidates)


STS_TOKEN = "ya29.fake-sts-token"
_NOT_FOUND = ("models/{model} is not found for API version {version}, or is not supported for "
              "generateContent. Call ListModels to see the list of available models and their "
              "supported methods.")
SCENARIOS: dict[str, Scenario] = {
    "fake-ok": Scenario(),
    "fake-429": Scenario(status=429, retry_delay="1s",
                         message="Resource has been exhausted (e.g. check quota)."),
    "fake-500": Scenario(status=500, message="Internal error encountered."),
    "fake-500-then-ok": Scenario(status=500, fail_times=2, message="Internal error encountered."),
    "fake-slow-first": Scenario(first_delay=2.0),
    "fake-stall": Scenario(stall_after=1, stall=5.0),
    "fake-error-mid": Scenario(error_after=2, message="Internal error encountered."),
    "fake-safety": Scenario(text=("Regarding the ",), finish="SAFETY"),
    "fake-blocked": Scenario(blocked="SAFETY"),
    "fake-max-tokens": Scenario(text=("The first part", " of a long answer"),
                                finish="MAX_TOKENS"),
    "gemini-pro": Scenario(status=404, message=_NOT_FOUND),
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]   # lower-case names
    body: Any                 # the parsed JSON (None if it was not JSON)
    raw: bytes
    api: str                  # "developer" or "vertex"
    model: str
    stream: bool
    at: float                 # time.monotonic()


@dataclass(frozen=True)
class Disconnect:
    model: str
    chunks_sent: int
    at: float


@dataclass
class _Reply:
    """An ASGI answer (Starlette calls what an endpoint returns). Unlike StreamingResponse under
    ASGI 2.4, it notices a client that goes away between chunks, not only at the next send."""

    status: int
    headers: list[tuple[bytes, bytes]]
    parts: list[tuple[float, bytes]]   # (delay before, bytes)
    first_delay: float = 0.0
    model: str = ""
    chunks_sent: int = 0
    on_disconnect: Callable[[_Reply], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await asyncio.sleep(self.first_delay)
            await send({"type": "http.response.start", "status": self.status,
                        "headers": self.headers})
            for delay, data in self.parts:
                await asyncio.sleep(delay)
                await send({"type": "http.response.body", "body": data, "more_body": True})
                self.chunks_sent += 1
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        sending, watching = asyncio.ensure_future(pump()), asyncio.ensure_future(gone())
        await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():
            if self.on_disconnect is not None:
                self.on_disconnect(self)
            sending.cancel()
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await sending


class FakeGemini:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.disconnects: list[Disconnect] = []
        self._scripts: dict[str, Scenario] = {}
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()
        self.token_requests: list[dict[str, str]] = []  # the STS exchanges (Vertex's ADC)
        self.app = Starlette(routes=[Route("/v1/token", self._token, methods=["POST"]),
                                     Route("/{path:path}", self._endpoint, methods=["POST"])])
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- what tests use ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, model: str, **changes: Any) -> Scenario:
        """Sets `model`'s scenario: its built-in one (or fake-ok's) with these fields changed
        (`chunks=` is another name for `text=`)."""
        if "chunks" in changes:
            changes["text"] = changes.pop("chunks")
        if isinstance(changes.get("text"), list):
            changes["text"] = tuple(changes["text"])
        scenario = dataclasses.replace(SCENARIOS.get(model, Scenario()), **changes)
        with self._lock:
            self._scripts[model] = scenario
        return scenario

    def reset(self) -> None:
        with self._lock:
            self.token_requests.clear()
            self.requests.clear()
            self.disconnects.clear()
            self._scripts.clear()
            self._served.clear()

    def requests_for(self, model: str) -> list[Recorded]:
        return [r for r in list(self.requests) if r.model == model]

    async def wait_disconnect(self, timeout: float = 2.0) -> Disconnect:
        """The first recorded disconnect, waiting for it (polls: the server has its own loop)."""
        deadline = time.monotonic() + timeout
        while not self.disconnects:
            if time.monotonic() > deadline:
                raise TimeoutError("the fake saw no disconnect")
            await asyncio.sleep(0.01)
        return self.disconnects[0]

    # -- serving -------------------------------------------------------------------------------

    def start(self) -> FakeGemini:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, lifespan="off", log_level="warning", access_log=False)
        self._server = server = uvicorn.Server(config)
        started: Future[None] = Future()

        def run() -> None:
            async def serve() -> None:
                task = asyncio.ensure_future(server.serve(sockets=[sock]))
                while not server.started and not task.done():
                    await asyncio.sleep(0.01)
                started.set_result(None)
                await task
            asyncio.run(serve())

        self._thread = threading.Thread(target=run, name="fake-gemini", daemon=True)
        self._thread.start()
        started.result(10)
        if not server.started:
            raise RuntimeError("the fake Gemini server did not start")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[FakeGemini]:
        fake = cls().start()
        try:
            yield fake
        finally:
            fake.stop()

    # -- the API -------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> _Reply:
        raw = await request.body()
        path = request.url.path
        api, version, model, method = "unknown", "", "", ""
        if match := _DEVELOPER.match(path):
            api, version, model, method = "developer", match[1], match[2], match[3]
        elif match := _VERTEX.match(path):
            api, version, model, method = "vertex", match[1], match[4], match[5]
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(Recorded(
                request.method, path, request.url.query,
                {k.lower(): v for k, v in request.headers.items()}, body, raw, api, model,
                method == "streamGenerateContent", time.monotonic()))
            scenario = self._scripts.get(model) or SCENARIOS.get(model) or Scenario()
            served = self._served.get(model, 0)
            self._served[model] = served + 1
        if method not in ("generateContent", "streamGenerateContent"):
            reply = _error(404, f"The fake does not serve {path}.", model)
        elif scenario.status is not None and (scenario.fail_times is None
                                              or served < scenario.fail_times):
            message = (scenario.message or "Error.").format(model=model, version=version)
            reply = _error(scenario.status, message, model, scenario.retry_delay)
            reply.first_delay = scenario.first_delay
        else:
            reply = _answer(scenario, model, body, len(raw), method == "streamGenerateContent")
        reply.on_disconnect = self._disconnected
        return reply

    async def _token(self, request: Request) -> JSONResponse:
        """Google's Security Token Service, as workload identity federation's credentials (an
        `external_account` file: application default credentials) exchange a token there."""
        form = dict((await request.form()).items())
        with self._lock:
            self.token_requests.append({k: str(v) for k, v in form.items()})
        return JSONResponse({"access_token": STS_TOKEN, "token_type": "Bearer",
                             "issued_token_type": "urn:ietf:params:oauth:token-type:"
                                                  "access_token", "expires_in": 3600})

    def _disconnected(self, reply: _Reply) -> None:
        with self._lock:
            self.disconnects.append(Disconnect(reply.model, reply.chunks_sent, time.monotonic()))


def _error(status: int, message: str, model: str, retry_delay: str | None = None) -> _Reply:
    error: dict[str, Any] = {"code": status, "message": message,
                             "status": _STATUS_NAMES.get(status, "UNKNOWN")}
    if retry_delay is not None:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generativelanguage.googleapis.com/"
                                            "generate_content_free_tier_requests",
                             "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ]
    data = json.dumps({"error": error}, indent=2).encode()
    return _Reply(status, [(b"content-type", b"application/json; charset=UTF-8")],
                  [(0.0, data)], model=model)


def _reply_text(scenario: Scenario, body: Any) -> tuple[str, ...]:
    if scenario.text is not None:
        return scenario.text
    last_user = ""
    for content in (body or {}).get("contents", []):
        if content.get("role", "user") == "user":
            last_user = "".join(p.get("text", "") for p in content.get("parts", []))
    tags = list(dict.fromkeys(_TAG.findall(last_user)))
    return ("Based on ", " and ".join(tags) or "the discussion", ", consider checking HbA1c.",
            " Please verify.")


def _answer(scenario: Scenario, model: str, body: Any, size: int, stream: bool) -> _Reply:
    version = f"{model}-fake-001"
    usage = {"promptTokenCount": max(1, size // 4)}
    if scenario.blocked is not None:
        events = [{"promptFeedback": {"blockReason": scenario.blocked, "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH",
             "blocked": True}]}, "usageMetadata": {**usage, "totalTokenCount":
                                                   usage["promptTokenCount"]},
            "modelVersion": version}]
    else:
        texts = _reply_text(scenario, body)
        events = [{"candidates": [{"content": {"role": "model", "parts": [{"text": t}]},
                                   "index": 0}], "modelVersion": version} for t in texts]
        out = max(1, len("".join(texts)) // 4)
        events[-1]["candidates"][0]["finishReason"] = scenario.finish
        events[-1]["usageMetadata"] = {**usage, "candidatesTokenCount": out,
                                       "totalTokenCount": usage["promptTokenCount"] + out}
    if not stream:
        return _single(scenario, events, model)
    parts = []
    for index, event in enumerate(events):
        delay = scenario.delay if index else 0.0
        if scenario.stall_after is not None and index == scenario.stall_after:
            delay += scenario.stall
        if scenario.error_after is not None and index == scenario.error_after:
            error = {"code": 500, "message": scenario.message or "Error.", "status": "INTERNAL"}
            parts.append((delay, b"data: " + json.dumps({"error": error}).encode() + b"\r\n\r\n"))
            break
        parts.append((delay, b"data: " + json.dumps(event).encode() + b"\r\n\r\n"))
    return _Reply(200, [(b"content-type", b"text/event-stream")], parts,
                  scenario.first_delay, model)


def _single(scenario: Scenario, events: list[dict[str, Any]], model: str) -> _Reply:
    merged = dict(events[-1])
    if "candidates" in merged:
        text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
        candidate = dict(merged["candidates"][0], content={"role": "model",
                                                           "parts": [{"text": text}]})
        merged["candidates"] = [candidate]
    return _Reply(200, [(b"content-type", b"application/json; charset=UTF-8")],
                  [(0.0, json.dumps(merged).encode())], scenario.first_delay, model)


@pytest.fixture(scope="session")
def fake_gemini_server() -> Iterator[FakeGemini]:
    with FakeGemini.running() as fake:
        yield fake


@pytest.fixture
def fake_gemini(fake_gemini_server: FakeGemini) -> FakeGemini:
    fake_gemini_server.reset()
    return fake_gemini_server

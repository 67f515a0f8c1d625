"""The assistant over the real API: the real google-genai SDK over real HTTP to a fake Gemini
server (tests/fake_gemini.py), ArcadeDB over Bolt, real WebSocket subscribers.

What the fake receives is checked for every identifier of the room's people; the streaming,
its throttling and the durable end on roomEvents; citations; upstream failures; cancellation
closing the upstream connection; the audit record and the metrics."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from graph_db import assistant as replies
from tests.call_helpers import metric
from tests.conftest import make_settings, serving
from tests.fake_gemini import STS_TOKEN, FakeGemini
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.node import SCHEMA, node_script
from tests.personas import People, Persona, make_room
from tests.rt_helpers import DELETE, DELETE_ROOM, SEND, attached
from tests.test_audit import trail
from tests.wsclient import WSClient, connect

REPLY_FIELDS = ("id prompt text done status truncated finishReason citations model "
                "usage { inputTokens outputTokens } error { code message } askedBy { id }")
ASK = f"""mutation($room: ID!, $prompt: String!) {{
  askAssistant(roomId: $room, prompt: $prompt) {{ {REPLY_FIELDS} }} }}"""
CANCEL = f"mutation($id: ID!) {{ cancelAssistantReply(id: $id) {{ {REPLY_FIELDS} }} }}"
REPLY = f"query($id: ID!) {{ assistantReply(id: $id) {{ {REPLY_FIELDS} }} }}"
SET = ("mutation($room: ID!, $on: Boolean!) "
       "{ setRoomAssistant(roomId: $room, enabled: $on) { id assistantEnabled } }")
HISTORY = ("query($id: ID!) { room(id: $id) { assistantEnabled "
           "assistantReplies(last: 5) { id status } } }")
LEAVE = "mutation($id: ID!) { leaveRoom(id: $id) { id } }"
EVENTS = f"""subscription($room: ID!, $after: String) {{
  roomEvents(roomId: $room, after: $after) {{
    __typename cursor
    ... on AssistantReplyUpdated {{ at reply {{ {REPLY_FIELDS} }} }}
  }} }}"""
NOTIFICATIONS = "query { notifications { edges { node { kind refId body } } } }"
MODEL = "fake-ok"



@pytest.fixture(autouse=True)
def nothing_identifying_left(fake_gemini: FakeGemini) -> Iterator[None]:
    """After every test: no request that reached the fake (body, path, query, headers) holds
    an identifier of the room's people."""
    yield
    for sent in bodies(fake_gemini):
        for identifier in IDENTIFIERS:
            assert identifier.lower() not in sent.lower(), identifier


def assistant_on(fake: FakeGemini, **overrides: object) -> dict[str, object]:
    """Settings of a service whose assistant is on (developer API through the fake), with
    short deadlines."""
    return {"enable_ai_assistant": True, "gemini_api_key": "AIza-test-key-never-in-urls",
            "gemini_base_url": fake.url, "ai_model_name": MODEL,
            "ai_first_token_timeout_seconds": 2.0, "ai_timeout_seconds": 6.0, **overrides}


@pytest.fixture(scope="module")
def ai(tmp_path_factory: pytest.TempPathFactory,
       fake_gemini_server: FakeGemini) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, "assistant", **assistant_on(fake_gemini_server)) as server:
        yield server


@pytest.fixture
async def crowd(ai: LiveServer) -> AsyncIterator[People]:
    ai.wipe()
    people = People(ai.settings, ai.url)
    yield people
    await people.aclose()


class Room:
    """A case room: a doctor hosting, a student and a teacher, and what they said."""

    def __init__(self, host: Persona, student: Persona, teacher: Persona, room_id: str) -> None:
        self.host, self.student, self.teacher, self.id = host, student, teacher, room_id
        self.messages: list[str] = []

    async def say(self, who: Persona, content: str) -> str:
        sent = await who.gql(SEND, room=self.id, content=content)
        self.messages.append(sent["sendMessage"]["id"])
        return str(sent["sendMessage"]["id"])

    async def ask(self, who: Persona | None = None,
                  prompt: str = "What should we check next?") -> dict[str, Any]:
        reply: dict[str, Any] = (await (who or self.host).gql(ASK, room=self.id,
                                                              prompt=prompt))["askAssistant"]
        return reply


IDENTIFIERS = ("Maria", "Kowalski", "maria.kowalski@stmarys.example", "Zoë", "Zoe",
               "Müller", "Mueller", "Anne-Marie", "Okafor", "4482913", "07700 900123",
               "7700900123", "12 Baker Street")


async def case_room(crowd: People) -> Room:
    host = crowd.make_user("doctor", "Maria Kowalski", email="maria.kowalski@stmarys.example")
    student = crowd.make_user("student", "Zoë Müller")
    teacher = crowd.make_user("teacher", "Anne-Marie Okafor")
    await register(host, student, teacher)
    room = await make_room(host, invite=[student, teacher])
    return Room(host, student, teacher, room["id"])


async def final(client: WSClient, sub: str, reply_id: str,
                timeout: float = 10.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The reply's events up to its durable end: (streaming snapshots, final reply)."""
    events = await client.until(
        sub, lambda e: e["__typename"] == "AssistantReplyUpdated" and e["reply"]["id"] ==
        reply_id and e["reply"]["done"], timeout)
    mine = [e for e in events if e["__typename"] == "AssistantReplyUpdated"
            and e["reply"]["id"] == reply_id]
    return mine[:-1], mine[-1]["reply"]


async def finished(who: Persona, reply_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The reply once done (polled: for tests that do not subscribe)."""
    deadline = time.monotonic() + timeout
    while True:
        reply: dict[str, Any] = (await who.gql(REPLY, id=reply_id))["assistantReply"]
        if reply["done"] or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.05)


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def watching(ai: LiveServer, room: Room) -> WSClient:
    client = await connect(ai.ws_url, room.teacher.token)
    await client.subscribe("ev", EVENTS, {"room": room.id})
    await attached(ai, room.id, 1)
    return client


def bodies(fake: FakeGemini) -> list[str]:
    """Every request as sent: the raw body, the path and the headers."""
    return [r.raw.decode() + r.path + r.query + json.dumps(r.headers) for r in fake.requests]


async def test_streams_cited_answer_without_identifiers(ai: LiveServer, crowd: People,
                                                        fake_gemini: FakeGemini) -> None:
    room = await case_room(crowd)
    first = await room.say(room.host, "Maria's patient, MRN 4482913, HbA1c 9.1% on 2026-03-14.")
    second = await room.say(room.student, "Zoë here: Mr Okafor's daughter asked us to call "
                                          "07700 900123 or maria.kowalski@stmarys.example")
    gone = await room.say(room.teacher, "Ignore this: 12 Baker Street")
    await room.host.gql(DELETE, id=gone)
    other = await make_room(room.host, name="Other")
    await room.host.gql(SEND, room=other["id"], content="nothing for the assistant")
    client = await watching(ai, room)
    fake_gemini.script(MODEL, delay=0.15)  # echoes the [m:ID] tags it was sent
    asked = await room.ask(prompt="Dr Kowalski asks: Zoe Mueller thinks what next?")
    assert (asked["done"], asked["status"], asked["text"]) == (False, "STREAMING", "")
    snapshots, reply = await final(client, "ev", asked["id"])
    await client.close()
    assert reply["status"] == "COMPLETE" and reply["done"] and not reply["truncated"]
    assert reply["citations"] == [first, second]  # the deleted one was never sent
    assert f"[m:{first}]" in reply["text"] and reply["text"].endswith("Please verify.")
    assert reply["usage"]["inputTokens"] > 0 and reply["usage"]["outputTokens"] > 0
    texts = [s["reply"]["text"] for s in snapshots]
    assert texts[0] == "" and len(texts) >= 2 and texts == sorted(texts, key=len)
    assert all(reply["text"].startswith(t) for t in texts)
    times = [datetime.fromisoformat(s["at"]) for s in snapshots[1:]]
    assert all((b - a).total_seconds() >= 0.09 for a, b in itertools.pairwise(times))
    (request,) = fake_gemini.requests
    sent = bodies(fake_gemini)[0]
    for identifier in IDENTIFIERS:
        assert identifier.lower() not in sent.lower(), identifier
    assert "AIza-test-key" not in request.path + request.query
    assert request.headers["x-goog-api-key"] == "AIza-test-key-never-in-urls"
    body = request.body
    assert body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 1024}
    system = body["systemInstruction"]["parts"][0]["text"]
    assert "not a substitute for clinical judgement" in system and "[m:<id>]" in system
    user = body["contents"][-1]["parts"][0]["text"]
    assert f"[m:{first}] [PERSON_1, doctor]: [PERSON_1]" in user
    assert "[MRN_1]" in user and "[PHONE_1]" in user and "[EMAIL_1]" in user
    assert gone not in user and "nothing for the assistant" not in user
    assert "Question from [PERSON_1, doctor]" in user


async def test_placeholders_restored_only_for_the_room(ai: LiveServer, crowd: People,
                                                       fake_gemini: FakeGemini) -> None:
    room = await case_room(crowd)
    cited = await room.say(room.student, "Zoë: sats 91% on air")
    fake_gemini.script(MODEL, text=(f"Per [m:{cited}], [PER", "SON_2] ", "is right; see "
                                    "[m:invented]."), delay=0.2)
    client = await watching(ai, room)
    asked = await room.ask()
    snapshots, reply = await final(client, "ev", asked["id"])
    await client.close()
    assert reply["text"] == f"Per [m:{cited}], Zoë Müller is right; see [m:invented]."
    assert reply["citations"] == [cited]
    for snapshot in snapshots:
        assert "[PER" not in snapshot["reply"]["text"]  # never half a placeholder
    # Only the end is durable: a client resuming from before the question replays it alone.
    resumed = await connect(ai.ws_url, room.teacher.token)
    await resumed.subscribe("r", EVENTS, {"room": room.id, "after": snapshots[0]["cursor"]})
    replayed = await resumed.event("r")
    assert (replayed["__typename"], replayed["reply"]["done"]) == ("AssistantReplyUpdated",
                                                                   True)
    assert replayed["reply"]["text"] == reply["text"]
    await resumed.close()


async def test_upstream_failures(ai: LiveServer, crowd: People,
                                 fake_gemini: FakeGemini) -> None:
    room = await case_room(crowd)
    await room.say(room.host, "A case")
    cases: list[tuple[dict[str, Any], str, str | None, int]] = [
        ({"status": 500, "fail_times": 2}, "COMPLETE", None, 3),
        ({"status": 429, "retry_delay": "0.5s", "fail_times": 1}, "COMPLETE", None, 2),
        ({"status": 429, "retry_delay": "30s"}, "FAILED", "AI_UPSTREAM_RATE_LIMITED", 1),
        ({"status": 500}, "FAILED", "AI_UPSTREAM_ERROR", 3),
        ({"status": 403, "message": "API key not valid"}, "FAILED", "AI_UPSTREAM_REJECTED", 1),
        ({"first_delay": 3.0}, "FAILED", "AI_UPSTREAM_TIMEOUT", 1),
        ({"error_after": 2}, "FAILED", "AI_UPSTREAM_ERROR", 1),
        ({"stall_after": 1, "stall": 5.0}, "FAILED", "AI_UPSTREAM_TIMEOUT", 1),
    ]
    for n, (scenario, status, code, requests) in enumerate(cases):
        fake_gemini.reset()
        fake_gemini.script(MODEL, **scenario)
        asker = room.host if n % 2 else room.teacher
        reply = await finished(asker, (await room.ask(asker))["id"])
        assert (reply["status"], (reply["error"] or {}).get("code")) == (status, code), scenario
        assert len(fake_gemini.requests) == requests, scenario
    # What was shown before an error mid-stream or a stall stays.
    assert reply["text"] == "Based on "


async def test_safety_blocks_and_truncation(ai: LiveServer, crowd: People,
                                            fake_gemini: FakeGemini) -> None:
    room = await case_room(crowd)
    for scenario, status, truncated, reason in (
            ({"text": ("Regarding ",), "finish": "SAFETY"}, "BLOCKED", False, "SAFETY"),
            ({"blocked": "SAFETY"}, "BLOCKED", False, "SAFETY"),
            ({"text": ("The first part", " of a long"), "finish": "MAX_TOKENS"}, "COMPLETE",
             True, "MAX_TOKENS")):
        fake_gemini.script(MODEL, **scenario)
        reply = await finished(room.host, (await room.ask())["id"])
        assert (reply["status"], reply["truncated"], reply["finishReason"]) == (
            status, truncated, reason), scenario
    blocked = (await room.host.gql(HISTORY, id=room.id))["room"]["assistantReplies"]
    assert [r["status"] for r in blocked] == ["BLOCKED", "BLOCKED", "COMPLETE"]
    reply = await finished(room.host, blocked[0]["id"])
    assert "safety" in reply["text"] and "Regarding" not in reply["text"]


async def test_cancelling_closes_the_upstream_stream(ai: LiveServer, crowd: People,
                                                     fake_gemini: FakeGemini) -> None:
    room = await case_room(crowd)
    await room.say(room.host, "A long case")
    slow = {"text": tuple(f"part {n}. " for n in range(40)), "delay": 0.1}
    fake_gemini.script(MODEL, **slow)
    client = await watching(ai, room)
    asked = await room.ask(room.student)
    await client.until("ev", lambda e: "part 1." in e.get("reply", {}).get("text", ""))
    assert await room.teacher.error(CANCEL, id=asked["id"]) == "FORBIDDEN"  # a member
    cancelled = (await room.student.gql(CANCEL, id=asked["id"]))["cancelAssistantReply"]
    assert cancelled["status"] == "CANCELLED" and cancelled["done"]
    assert cancelled["text"].startswith("part 0. part 1.")
    gone = await fake_gemini.wait_disconnect(2.0)
    assert gone.chunks_sent < 40
    _, reply = await final(client, "ev", asked["id"])
    assert reply["status"] == "CANCELLED"
    # The host (a moderator of the room) cancels someone else's; leaving cancels one's own.
    for how in ("host", "leave", "delete"):
        fake_gemini.reset()
        fake_gemini.script(MODEL, **slow)
        asked = await room.ask(room.teacher if how == "delete" else room.student)
        await client.until("ev", lambda e: "part 1." in e.get("reply", {}).get("text", ""))
        if how == "host":
            await room.host.gql(CANCEL, id=asked["id"])
        elif how == "leave":
            await room.student.gql(LEAVE, id=room.id)
        else:
            await room.host.gql(DELETE_ROOM, id=room.id)
        await fake_gemini.wait_disconnect(2.0)
        if how == "delete":  # the room is gone: its stream ends, the reply is cancelled
            assert ai.services.assistant is not None
            await wait_for(lambda: not ai.services.assistant.calls)  # type: ignore[union-attr]
            (stored,) = ai.call(replies.replies_by_ids(ai.services.db, [asked["id"]]))
            assert stored is not None and stored.status == "CANCELLED"
            break
        _, reply = await final(client, "ev", asked["id"])
        assert reply["status"] == "CANCELLED", how
    await client.close()


async def test_access_switches_and_limits(ai: LiveServer, crowd: People,
                                          fake_gemini: FakeGemini) -> None:
    room = await case_room(crowd)
    outsider, patient = crowd.make_user("doctor"), crowd.make_user("patient")
    await register(outsider, patient)
    await room.host.gql("mutation($r: ID!, $u: [ID!]!) { inviteToRoom(roomId: $r, "
                        "userIds: $u) { id } }", r=room.id, u=[patient.id])
    assert await outsider.error(ASK, room=room.id, prompt="hi") == "NOT_FOUND"
    assert await patient.error(ASK, room=room.id, prompt="hi") == "FORBIDDEN"
    assert await room.host.error(ASK, room=room.id, prompt="  ") == "BAD_USER_INPUT"
    assert await room.student.error(SET, room=room.id, on=False) == "FORBIDDEN"
    off = (await room.host.gql(SET, room=room.id, on=False))["setRoomAssistant"]
    assert off["assistantEnabled"] is False
    body = await room.student.post(ASK, {"room": room.id, "prompt": "hi"})
    assert body["errors"][0]["extensions"] == {"code": "AI_DISABLED", "scope": "room"}
    await room.host.gql(SET, room=room.id, on=True)
    fake_gemini.script(MODEL, text=tuple(f"{n} " for n in range(20)), delay=0.1)
    first = await room.ask(room.student)
    body = await room.student.post(ASK, {"room": room.id, "prompt": "again"})
    ext = body["errors"][0]["extensions"]
    assert (ext["code"], ext["reason"]) == ("AI_RATE_LIMITED", "in_flight")
    assert ext["retryAfter"] >= 1
    await finished(room.student, first["id"])
    await finished(room.student, (await room.ask(room.student))["id"])  # free again


async def test_audit_record_notification_and_metrics(ai: LiveServer, crowd: People,
                                                     fake_gemini: FakeGemini) -> None:
    room = await case_room(crowd)
    said = await room.say(room.teacher, "Zoë Müller's patient, MRN 4482913")
    before = await metric(ai, 'collab_ai_requests_total{outcome="complete"}')
    reply = await finished(room.host, (await room.ask(prompt="Maria asks: next step?"))["id"])
    admin = crowd.make_user("admin")
    await register(admin)
    records = await trail(ai, admin, action="assistant.call")
    (record,) = [r for r in records if r["objectId"] == reply["id"]]
    assert (record["outcome"], record["actorId"], record["roomId"]) == (
        "ALLOWED", room.host.id, room.id)
    details = await admin.gql("query { auditEvents(filter: {action: \"assistant.call\"}) "
                              "{ edges { node { objectId details } } } }")
    (call,) = [e["node"]["details"] for e in details["auditEvents"]["edges"]
               if e["node"]["objectId"] == reply["id"]]
    assert call["messageIds"] == [said] and call["messageCount"] == 1
    assert call["backend"] == "developer" and call["model"] == MODEL
    assert call["redactions"]["PERSON"] >= 2 and call["redactions"]["MRN"] == 1
    assert len(call["payloadSha256"]) == 64 and call["outcome"] == "complete"
    assert call["tokensIn"] > 0 and call["tokensOut"] > 0 and call["retries"] == 0
    assert call["firstTokenMs"] <= call["totalMs"] and call["citations"] == [said]
    flat = json.dumps(call)
    for secret in ("Zoë", "Müller", "Maria", "4482913", "next step", "HbA1c"):
        assert secret not in flat
    await asyncio.to_thread(ai.call, ai.services.inbox.drain())
    notes = (await room.host.gql(NOTIFICATIONS))["notifications"]["edges"]
    assert {"kind": "ASSISTANT", "refId": reply["id"], "body": "complete"} in [
        n["node"] for n in notes]
    assert await metric(ai, 'collab_ai_requests_total{outcome="complete"}') == before + 1
    assert await metric(ai, 'collab_ai_phi_redactions_total{type="MRN"}') >= 1
    assert await metric(ai, "collab_ai_time_to_first_token_seconds_count") >= 1
    assert ai.services.assistant is not None and ai.services.assistant.sizes()[
        "assistant.calls"] == 0


async def test_disabled_by_default(fresh: LiveServer, people: People) -> None:
    host = people.make_user("doctor")
    await register(host)
    room = await make_room(host)
    body = await host.post(ASK, {"room": room["id"], "prompt": "hi"})
    assert body["errors"][0]["extensions"] == {"code": "AI_DISABLED", "scope": "server"}


def test_developer_backend_needs_consent_outside_development(tmp_path: Any) -> None:
    production = {"environment": "production", "allow_insecure_http": True,
                  "enable_ai_assistant": True, "gemini_api_key": "k"}
    with pytest.raises(ValueError, match="AI_BACKEND: the Gemini Developer API's terms"):
        make_settings(tmp_path, **production)
    assert make_settings(tmp_path, **production, ai_allow_non_baa=True).ai_allow_non_baa
    vertex = make_settings(tmp_path, **production, ai_backend="vertex",
                           google_cloud_project="proj-x")
    assert vertex.ai_backend == "vertex"


async def test_not_configured(tmp_path_factory: pytest.TempPathFactory) -> None:
    """On, but no key (developer), or Vertex without application default credentials."""
    for extra in ({}, {"ai_backend": "vertex", "google_cloud_project": "proj-x"}):
        with serving(tmp_path_factory, "ai-unconfigured", enable_ai_assistant=True,
                     **extra) as server:
            people = People(server.settings, server.url)
            host = people.make_user("doctor")
            await register(host)
            room = await make_room(host)
            assert await host.error(ASK, room=room["id"], prompt="hi") == "AI_NOT_CONFIGURED"
            await people.aclose()


async def test_answers_in_two_rooms_stream_side_by_side(ai: LiveServer, crowd: People,
                                                        fake_gemini: FakeGemini) -> None:
    """One slow answer holds nothing else: a second room's streams at the same time."""
    first, second = await case_room(crowd), await case_room(crowd)
    fake_gemini.script(MODEL, text=tuple(f"{n} " for n in range(8)), delay=0.2)
    one, two = await watching(ai, first), await watching(ai, second)
    a, b = await first.ask(), await second.ask()
    (_, reply_a), (_, reply_b) = await asyncio.gather(final(one, "ev", a["id"]),
                                                      final(two, "ev", b["id"]))
    assert reply_a["text"] == reply_b["text"] == "0 1 2 3 4 5 6 7 "
    starts = sorted(r.at for r in fake_gemini.requests)
    assert starts[1] - starts[0] < 1.0  # the second did not wait for the first (1.4 s)
    await one.close()
    await two.close()


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory,
          fake_gemini_server: FakeGemini) -> Iterator[LiveServer]:
    """Two questions per user per period, a small daily budget per room."""
    with serving(tmp_path_factory, "assistant-limits", **assistant_on(
            fake_gemini_server, ai_user_requests=2, ai_daily_token_budget=2_600)) as server:
        yield server


async def test_limits_budget_and_an_unavailable_model(tight: LiveServer,
                                                      fake_gemini: FakeGemini) -> None:
    crowd = People(tight.settings, tight.url)
    room = await case_room(crowd)
    # A question reserves its estimate (input + AI_MAX_OUTPUT_TOKENS): the second one in
    # flight would pass the room's 2,600 tokens.
    fake_gemini.script(MODEL, text=tuple(f"{n} " for n in range(10)), delay=0.1)
    first = await room.ask(room.host)
    body = await room.teacher.post(ASK, {"room": room.id, "prompt": "and?"})
    ext = body["errors"][0]["extensions"]
    assert ext["code"] == "AI_BUDGET_EXCEEDED" and ext["reason"] == "daily_tokens"
    assert 0 < ext["retryAfter"] <= 86_400
    done = await finished(room.host, first["id"])  # reconciled: the model's count stays
    assert done["status"] == "COMPLETE"
    await finished(room.host, (await room.ask(room.host))["id"])
    body = await room.host.post(ASK, {"room": room.id, "prompt": "a third?"})
    ext = body["errors"][0]["extensions"]
    assert (ext["code"], ext["reason"]) == ("AI_RATE_LIMITED", "user_rate")
    assert ext["retryAfter"] > 500
    # The API answers 404 for a retired model: that reply fails, the next question at once.
    fake_gemini.reset()
    fake_gemini.script(MODEL, status=404, message="models/x is not found for API version v1")
    failed = await finished(room.teacher, (await room.ask(room.teacher))["id"])
    assert failed["error"]["code"] == "AI_MODEL_UNAVAILABLE"
    assert await room.student.error(ASK, room=room.id, prompt="hi") == "AI_MODEL_UNAVAILABLE"
    assert len(fake_gemini.requests) == 1
    await crowd.aclose()


async def test_a_reply_left_streaming_by_a_dead_instance_is_swept(ai: LiveServer,
                                                                  crowd: People) -> None:
    room = await case_room(crowd)
    orphan = ai.call(replies.create(ai.services.db, reply_id="orphan-1", room_id=room.id,
                                    asked_by=room.host.id, prompt="?", model=MODEL))
    assert orphan is not None and orphan.status == "STREAMING"
    assistant = ai.services.assistant
    assert assistant is not None
    ai.call(assistant.sweep_once())  # not stale yet (AI_TIMEOUT_SECONDS + 60 s)
    assert (await room.host.gql(REPLY, id="orphan-1"))["assistantReply"]["done"] is False
    assistant.stale_after_s, kept = 0.0, assistant.stale_after_s
    try:
        ai.call(assistant.sweep_once())
    finally:
        assistant.stale_after_s = kept
    swept = (await room.host.gql(REPLY, id="orphan-1"))["assistantReply"]
    assert (swept["status"], swept["error"]["code"]) == ("FAILED", "AI_UPSTREAM_TIMEOUT")


@pytest.fixture(scope="module")
def vertex(tmp_path_factory: pytest.TempPathFactory,
           fake_gemini_server: FakeGemini) -> Iterator[LiveServer]:
    """Vertex AI with application default credentials as a hospital's deployment on Google
    Cloud would have them: workload identity federation (an `external_account` file), its
    token exchanged at the fake's Security Token Service."""
    tmp = tmp_path_factory.mktemp("assistant-vertex")
    (tmp / "subject.jwt").write_text("eyJhbGciOi.workload-subject.token")
    (tmp / "adc.json").write_text(json.dumps({
        "type": "external_account", "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "audience": "//iam.googleapis.com/locations/global/workloadIdentityPools/p/providers/f",
        "token_url": f"{fake_gemini_server.url}/v1/token",
        "credential_source": {"file": str(tmp / "subject.jwt")}}))
    settings = make_settings(
        tmp, enable_ai_assistant=True, ai_backend="vertex", google_cloud_project="proj-x",
        google_cloud_location="europe-west4", gemini_base_url=fake_gemini_server.url,
        ai_model_name=MODEL)
    with pytest.MonkeyPatch.context() as env:  # read once, at start-up
        env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp / "adc.json"))
        server = LiveServer(settings).start()
    yield server
    server.stop()


async def test_vertex_with_application_default_credentials(vertex: LiveServer,
                                                           fake_gemini: FakeGemini) -> None:
    crowd = People(vertex.settings, vertex.url)
    room = await case_room(crowd)
    said = await room.say(room.student, "Zoë: MRN 4482913, what next?")
    reply = await finished(room.host, (await room.ask())["id"])
    assert (reply["status"], reply["citations"]) == ("COMPLETE", [said])
    (request,) = fake_gemini.requests
    assert request.api == "vertex" and request.path == (
        "/v1beta1/projects/proj-x/locations/europe-west4/publishers/google/models/"
        f"{MODEL}:streamGenerateContent")
    assert request.headers["authorization"] == f"Bearer {STS_TOKEN}"
    assert "x-goog-api-key" not in request.headers
    (exchange,) = fake_gemini.token_requests
    assert exchange["subject_token"] == "eyJhbGciOi.workload-subject.token"
    assert exchange["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    await crowd.aclose()


@pytest.mark.parametrize("client", ("apollo", "urql", "graphql-ws"))
async def test_real_clients_follow_a_streamed_answer(client: str, ai: LiveServer,
                                                     crowd: People, fake_gemini: FakeGemini,
                                                     tmp_path: Path) -> None:
    """Apollo Client, urql and graphql-ws's own client (tests/clients/common.mjs `assistant`):
    the question through the library, the snapshots as ephemeral events (`durable: false`,
    never taken for duplicates), the end as the one durable event."""
    room = await case_room(crowd)
    said = await room.say(room.host, "A case")
    fake_gemini.script(MODEL, delay=0.15)
    settings = {"http": f"{ai.url}/graphql", "ws": ai.ws_url, "token": room.student.token,
                "room": room.id, "schema": str(SCHEMA)}
    async with node_script(f"{client}.mjs", "assistant", config=settings,
                           log_dir=tmp_path) as script:
        await script.expect("subscribing")
        await attached(ai, room.id, 1)
        await script.send("go")
        while not script.seen("done"):  # its first snapshot may come before the answer
            await script.line()
    (asked,) = script.seen("asked")
    assert asked["error"] is None and asked["data"]["askAssistant"]["done"] is False
    replies = script.seen("reply")
    streaming, end = replies[:-1], replies[-1]
    assert streaming and all(not r["durable"] and not r["done"] for r in streaming)
    assert (end["durable"], end["done"], end["status"]) == (True, True, "COMPLETE")
    assert end["citations"] == [said] and end["text"].endswith("Please verify.")
    assert {r["cursor"] for r in streaming} != {end["cursor"]}
    assert script.seen("duplicate") == []

"""What the model is sent (assistant/prompt.py), the final check on the wire (assistant/run.py
with the real SDK and the fake Gemini server), and how a run's outcome becomes a reply."""

from __future__ import annotations

import orjson

from assistant.backend import AIRequest, Chunk, Turn, UpstreamError
from assistant.firewall import Person, Vault
from assistant.gemini import GeminiBackend
from assistant.prompt import SYSTEM_INSTRUCTION, Item, build, citations, estimate_tokens
from assistant.run import BLOCKED_TEXT, Outcome, Run, ending_of, payload_of
from assistant.upstream import Policy
from tests.fake_gemini import FakeGemini

PEOPLE = [Person("u1", "Maria Kowalski", "maria.kowalski@stmarys.example"),
          Person("u2", "Zoë Müller"), Person("u3", "Anne-Marie Okafor")]


def items(count: int, *, answer_at: int | None = None) -> list[Item]:
    found = []
    for n in range(count):
        if n == answer_at:
            found.append(Item(f"a{n}", "", "", f"Earlier answer citing [m:m{n - 1}].",
                              answer=True))
        else:
            found.append(Item(f"m{n}", "u2" if n % 2 else "u1", "doctor",
                              f"message {n} from Maria about Zoë"))
    return found


def built(vault: Vault, found: list[Item], max_input_tokens: int = 8_000) -> AIRequest:
    return build(vault, found, asker_id="u3", asker_role="teacher", prompt="Anne-Marie asks?",
                 model="m", max_input_tokens=max_input_tokens,
                 max_output_tokens=256).request


def test_lines_turns_and_the_question() -> None:
    vault = Vault(PEOPLE)
    request = built(vault, items(5, answer_at=2))
    assert [t.role for t in request.turns] == ["user", "model", "user"]
    first, answer, last = (t.text for t in request.turns)
    assert first.splitlines()[1:] == [
        "[m:m0] [PERSON_2, doctor]: message 0 from [PERSON_2] about [PERSON_3]",
        "[m:m1] [PERSON_3, doctor]: message 1 from [PERSON_2] about [PERSON_3]"]
    assert answer == "Earlier answer citing [m:m1]."  # ids are never taken for numbers
    assert last.endswith("Question from [PERSON_1, teacher]:\n[PERSON_1] asks?")
    assert request.system == SYSTEM_INSTRUCTION and request.max_output_tokens == 256
    assert vault.leaks(payload_of(request)) == []


def test_the_oldest_lines_go_first_past_the_input_cap() -> None:
    found = items(200)
    whole = build(Vault(PEOPLE), found, asker_id="u3", asker_role="teacher", prompt="q?",
                  model="m", max_input_tokens=100_000, max_output_tokens=256)
    capped = build(Vault(PEOPLE), found, asker_id="u3", asker_role="teacher", prompt="q?",
                   model="m", max_input_tokens=1_000, max_output_tokens=256)
    assert len(whole.sent_ids) == 200 and whole.dropped == 0
    assert capped.sent_ids == whole.sent_ids[-len(capped.sent_ids):]  # the newest kept
    assert 0 < len(capped.sent_ids) < 200 and capped.dropped == 200 - len(capped.sent_ids)
    assert estimate_tokens(payload_of(capped.request).decode()) <= 1_100


def test_citations_only_of_what_was_sent() -> None:
    text = "See [m:b] and [m:a], again [m:b], and [m:zz] (invented) [m:]."
    assert citations(text, ["a", "b", "c"]) == ("b", "a")


def test_endings() -> None:
    vault = Vault(PEOPLE)
    vault.redact("Maria")
    blocked = Outcome(raw="Regarding [PERSON_1]", finish_reason="SAFETY")
    assert ending_of(blocked, vault, ()).text == BLOCKED_TEXT
    assert ending_of(Outcome(blocked=True), vault, ()).status == "BLOCKED"
    long = Outcome(raw="[PERSON_1] first", finish_reason="MAX_TOKENS", tokens_out=9)
    ending = ending_of(long, vault, ())
    assert (ending.status, ending.truncated, ending.text) == ("COMPLETE", True,
                                                             "Maria Kowalski first")
    failed = Outcome(raw="partial", error=UpstreamError("AI_UPSTREAM_ERROR", "x"))
    assert (ending_of(failed, vault, ()).status, ending_of(failed, vault, ()).error_code) == (
        "FAILED", "AI_UPSTREAM_ERROR")
    cancelled = Outcome(raw="so far", cancelled="left")
    assert ending_of(cancelled, vault, ()).status == "CANCELLED"
    outcome = Outcome()
    outcome.absorb(Chunk("a", tokens_in=3))
    outcome.absorb(Chunk("b", finish_reason="STOP", tokens_out=2, model_version="v"))
    assert (outcome.raw, outcome.tokens_in, outcome.tokens_out, outcome.label) == (
        "ab", 3, 2, "complete")


async def test_the_wire_guard_stops_an_identifier_before_any_byte_leaves(
        fake_gemini: FakeGemini) -> None:
    """A request that would carry an identifier (here built by hand, past the prompt's
    redaction) is stopped by the last check on the HTTP request's bytes: nothing is sent."""
    backend = GeminiBackend(backend="developer", api_key="k", project=None, location=None,
                            base_url=fake_gemini.url)
    vault = Vault(PEOPLE)
    published: list[str] = []

    async def publish(text: str) -> None:
        published.append(text)

    leaky = AIRequest(model="fake-ok", system="s",
                      turns=(Turn("user", "What about Zoe MUELLER?"),))
    try:
        outcome = await Run(backend, leaky, vault, Policy(), publish).stream()
        assert outcome.phi == ["PERSON"] and outcome.label == "phi_blocked"
        assert fake_gemini.requests == [] and published == []
        clean = AIRequest(model="fake-ok", system="s", turns=(Turn("user", "A case"),))
        outcome = await Run(backend, clean, vault, Policy(), publish).stream()
        assert outcome.label == "complete" and len(fake_gemini.requests) == 1
        sent = fake_gemini.requests[0].raw
        assert orjson.loads(sent)["contents"] == orjson.loads(payload_of(clean))["contents"]
    finally:
        await backend.aclose()

"""`python -m bench.firewall` (`make firewall-report`): the PHI firewall (assistant/firewall.py)
against its synthetic corpus (tests/phi_corpus.py), the main set and the held-out set.

Recall: gold spans caught, a span counting only if every one of its characters is inside a
redaction; known recall: the same over participants' names and emails, which must be 100 %
(exit status 1 otherwise). Precision: the share of redactions that overlap a gold span. One
vault per set, as one assistant call. "Blocked": lines whose redacted text, JSON-encoded, the
leak check still rejects (must be 0). Times are per line, on this machine, informative only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from assistant.firewall import FIREWALL_VERSION, TYPES, Person, Vault
from assistant.prompt import Item, build
from assistant.run import payload_of
from tests.phi_corpus import HELD_OUT, MAIN, ROSTER, Gold, Line

SHOW_MISSES = 12


@dataclass
class Score:
    lines: int = 0
    gold: Counter[str] = field(default_factory=Counter)  # by type
    caught: Counter[str] = field(default_factory=Counter)
    known: int = 0
    known_caught: int = 0
    redactions: Counter[str] = field(default_factory=Counter)  # by the redaction's type
    precise: Counter[str] = field(default_factory=Counter)
    blocked: int = 0
    redact_seconds: float = 0.0
    leaks_seconds: float = 0.0
    missed: list[str] = field(default_factory=list)
    spurious: list[str] = field(default_factory=list)


def locate(line: Line) -> list[tuple[int, int, Gold]]:
    """The gold spans of a line as offsets (the nth occurrence of each substring)."""
    spans = []
    for gold in line.gold:
        start = -1
        for _ in range(gold.nth + 1):
            start = line.text.find(gold.text, start + 1)
            if start < 0:
                raise ValueError(f"gold {gold.text!r} is not in {line.text!r}")
        spans.append((start, start + len(gold.text), gold))
    return spans


def evaluate(lines: Sequence[Line]) -> Score:
    score = Score(lines=len(lines))
    vault = Vault(ROSTER)
    for line in lines:
        started = time.perf_counter()
        redacted, spans = vault.redact_with_spans(line.text)
        score.redact_seconds += time.perf_counter() - started
        started = time.perf_counter()
        score.blocked += bool(vault.leaks(json.dumps(redacted)))
        score.leaks_seconds += time.perf_counter() - started
        _score_line(score, line, spans)
    return score


def _score_line(score: Score, line: Line, spans: list[tuple[int, int, str]]) -> None:
    covered = {i for start, end, _ in spans for i in range(start, end)}
    gold = locate(line)
    for start, end, item in gold:
        hit = all(i in covered for i in range(start, end))
        score.gold[item.kind] += 1
        score.caught[item.kind] += hit
        score.known += item.known
        score.known_caught += item.known and hit
        if not hit:
            score.missed.append(f"{item.kind} {item.text!r}" + (" (KNOWN)" if item.known else ""))
    for start, end, kind in spans:
        precise = any(start < g_end and g_start < end for g_start, g_end, _ in gold)
        score.redactions[kind] += 1
        score.precise[kind] += precise
        if not precise:
            score.spurious.append(f"{kind} {line.text[start:end]!r}")


def _ratio(part: int, whole: int) -> str:
    return f"{part}/{whole} {100 * part / whole:5.1f}%" if whole else "-"


def report(scores: dict[str, Score]) -> str:
    out = [f"PHI firewall {FIREWALL_VERSION} on tests/phi_corpus.py "
           f"(synthetic, {len(ROSTER)} participants)", "",
           f"{'set':9} {'lines':>5} {'recall':>15} {'known recall':>15} {'precision':>15} "
           f"{'blocked':>7} {'ms/line redact':>14} {'leaks':>6}"]
    for name, s in scores.items():
        n = max(s.lines, 1)
        out.append(
            f"{name:9} {s.lines:5} {_ratio(s.caught.total(), s.gold.total()):>15} "
            f"{_ratio(s.known_caught, s.known):>15} "
            f"{_ratio(s.precise.total(), s.redactions.total()):>15} {s.blocked:7} "
            f"{1000 * s.redact_seconds / n:14.2f} {1000 * s.leaks_seconds / n:6.2f}")
    out += ["", f"{'by type':9} " + " ".join(
        f"{name + ' recall':>15} {name + ' precision':>15}" for name in scores)]
    for kind in TYPES:
        out.append(f"{kind:9} " + " ".join(
            f"{_ratio(s.caught[kind], s.gold[kind]):>15} "
            f"{_ratio(s.precise[kind], s.redactions[kind]):>15}" for s in scores.values()))
    for name, s in scores.items():
        for label, items in (("missed", s.missed), ("not in gold", s.spurious)):
            if items:
                more = f" (+{len(items) - SHOW_MISSES} more)" if len(items) > SHOW_MISSES else ""
                out.append(f"\n{name}, {label}: " + "; ".join(items[:SHOW_MISSES]) + more)
    return "\n".join(out)


def prepare(people: Sequence[Person], items: Sequence[Item]) -> int:
    """What askAssistant does before anything leaves: the request through a vault, then the
    leak search on it (the wire guard searches the same bytes once more)."""
    vault = Vault(people)
    built = build(vault, items, asker_id=people[0].user_id, asker_role="doctor",
                  prompt="What should we check next?", model="m", max_input_tokens=8_000,
                  max_output_tokens=1_024)
    payload = payload_of(built.request)
    assert not vault.leaks(payload)
    return len(payload)


async def _stall(work: object, offloaded: bool) -> float:
    """The event loop's longest stall (ms) while `work` runs inline or in a worker thread,
    measured by a 1 ms ticker."""
    longest, running = 0.0, True

    async def tick() -> None:
        nonlocal longest
        while running:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            longest = max(longest, time.perf_counter() - before - 0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    if offloaded:
        await asyncio.to_thread(work)  # type: ignore[arg-type]
    else:
        work()  # type: ignore[operator]
    running = False
    await ticker
    return longest * 1000


def full_request() -> str:
    """A full context (the last 100 messages, cut to AI_MAX_INPUT_TOKENS) of corpus lines."""
    people = [Person(p.user_id, p.display_name, p.email) for p in ROSTER]
    texts = [line.text for line in MAIN]
    items = [Item(f"m{n}", people[n % len(people)].user_id, "doctor", texts[n % len(texts)])
             for n in range(100)]
    started = time.perf_counter()
    size = prepare(people, items)
    cost = (time.perf_counter() - started) * 1000
    inline = asyncio.run(_stall(lambda: prepare(people, items), offloaded=False))
    aside = asyncio.run(_stall(lambda: prepare(people, items), offloaded=True))
    return (f"\nfull request ({len(items)} messages, {size / 1024:.0f} KiB): redaction and "
            f"leak search {cost:.0f} ms; longest event-loop stall inline {inline:.0f} ms, "
            f"in a worker thread (as the service runs it) {aside:.0f} ms "
            f"({aside / inline:.2f}x)")


def main() -> int:
    scores = {"main": evaluate(MAIN), "held-out": evaluate(HELD_OUT)}
    print(report(scores))
    print(full_request())
    failed = [name for name, s in scores.items() if s.known_caught < s.known or s.blocked]
    if failed:
        print(f"\nFAIL: known identifiers missed, or redacted lines blocked, in: "
              f"{', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The longest garbage-collection pause of our server during the fan-out's throughput phase,
from two scrapes of its /metrics taken right before and right after the phase.

The server exposes `collab_gc_pause_seconds` (a histogram by generation) and
`collab_gc_pause_max_seconds`, the longest pause since the process started
(observability.metrics.GcPauses). The longest pause between the scrapes is that gauge's new
value when it rose in between (the new maximum happened in the phase: exact); otherwise it is
bounded by the highest histogram bucket whose count grew (it lies in (lower bound, le]). The
goal's 20 ms is a bucket bound, so the verdict is decided either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

GOAL_MS = 20.0
HISTOGRAM, LONGEST = "collab_gc_pause_seconds", "collab_gc_pause_max_seconds"


@dataclass(frozen=True)
class Scrape:
    buckets: dict[tuple[str, float], float]  # (generation, le) -> cumulative count
    longest: float


async def scrape(host: str, port: int, token: str | None) -> Scrape:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://{host}:{port}/metrics", headers=headers)
    response.raise_for_status()
    buckets: dict[tuple[str, float], float] = {}
    longest = -1.0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == f"{HISTOGRAM}_bucket":
                buckets[(sample.labels["generation"], float(sample.labels["le"]))] = \
                    sample.value
            elif sample.name == LONGEST:
                longest = sample.value
    if not buckets or longest < 0:
        raise RuntimeError(f"{HISTOGRAM} / {LONGEST} not in the server's /metrics")
    return Scrape(buckets, longest)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else round(1e3 * seconds, 2)


def during(before: Scrape, after: Scrape) -> dict[str, Any]:
    """Collections per generation between the scrapes, and their longest pause: exact
    (`longest_ms`) when the gauge rose, and always the bounds of its bucket."""
    low = high = 0.0
    collections: dict[str, int] = {}
    for generation in sorted({g for g, _ in after.buckets}):
        below, grown = 0.0, 0.0
        for le in sorted(le for g, le in after.buckets if g == generation):
            now = after.buckets[(generation, le)] - before.buckets.get((generation, le), 0.0)
            if now > grown and le > high:  # pauses in (below, le] during the phase
                low, high = below, le
            below, grown = le, now
        collections[generation] = int(grown)  # the +Inf bucket: every collection
    exact = after.longest if after.longest > before.longest else None
    return {"collections": collections, "longest_ms": _ms(exact), "low_ms": _ms(low),
            "high_ms": _ms(high)}


def met(gc: dict[str, Any]) -> bool:
    if gc.get("longest_ms") is not None:
        return bool(gc["longest_ms"] <= GOAL_MS)
    return gc.get("high_ms") is not None and gc["high_ms"] <= GOAL_MS


def shown(gc: dict[str, Any]) -> str:
    if gc.get("longest_ms") is not None:
        return f"{gc['longest_ms']:.1f}"
    if not sum(gc["collections"].values()):
        return "no collection"
    high = "∞" if gc["high_ms"] is None else f"{gc['high_ms']:g}"
    return f"{gc['low_ms']:g}–{high} (bucket)"


def table(runs: list[dict[str, Any]]) -> str:
    """Every round of ours (each is a fresh process); the goal holds if met in all."""
    rows = ["| N | server | collections gen 0 / 1 / 2 | longest GC pause ms "
            f"| goal ≤ {GOAL_MS:g} ms |", "|---:|---|---:|---:|---|"]
    for r in sorted(runs, key=lambda r: (r["n"], r["kind"])):
        gc = r.get("throughput", {}).get("gc")
        if r["kind"] == "raw" or gc is None:
            continue
        if "error" in gc:
            rows.append(f"| {r['n']:,} | {r['kind']} | not read: {gc['error']} | | |")
            continue
        counts = " / ".join(f"{gc['collections'].get(g, 0):,}" for g in ("0", "1", "2"))
        rows.append(f"| {r['n']:,} | {r['kind']} | {counts} | {shown(gc)} "
                    f"| {'met' if met(gc) else '**MISSED**'} |")
    return "\n".join(rows)

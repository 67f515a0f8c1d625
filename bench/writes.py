"""The durable-writes bench (`python -m bench writes`): `sendMessage` over HTTP POST against
the database's own ceiling, the driver alone running the same write.

Scenarios RxC (default 1x1, 1x8, 1x32, 50x32): C concurrent senders in all, sender i a
distinct user and member of room i mod R (so 50x32 has one sender in each of 32 rooms and
none in the other 18), each sending its next message as soon as the previous one was
answered, for a warm-up then a measured window. Per scenario and round:

- ours: our server pinned to core 0 with the database's JVM, the load generator
  (bench.writeload, one keep-alive connection per sender) pinned to core 1;
- driver (the ceiling): one process pinned to core 0, where our server runs, calling what our
  resolver writes with, graph_db.group_commit.GroupCommit.send (same Cypher, same
  transactions: a room's concurrent sends together), with the same senders in the same
  rooms.

Users are created once over our GraphQL API (a teacher who hosts the rooms, one student per
sender); every run, ours and the ceiling alike, gets fresh rooms, created and joined through
ours, so that each starts from the same state (empty rooms, the same members) whatever ran
before it. Each round starts our server afresh, runs the scenarios in turn, ours and the ceiling
back to back in alternating order, and waits for an idle database before each run.
Reported: messages/s, p50/p99, errors by code, and write retries (collab_db_retries_total by
reason: conflict, unavailable) over the measured window; every figure also as a ratio to the
ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import service
from bench.httpbench import drained
from bench.report import AuditCost
from bench.service import Server, bench_settings, gql, make_token
from graph_db.embedded import EmbeddedGraphServer
from graph_db.models import Role

DEFAULT_SCENARIOS = "1x1,1x8,1x32,50x32"
DURATION_S, WARMUP_S = 8.0, 2.0
QUICK_DURATION_S, QUICK_WARMUP_S = 3.0, 1.0
JIT_WARMUP_S = 6.0  # once, before the rounds: the JVM compiles the write path
LOADGEN_CORE, SERVER_CORE = 1, 0
THROUGHPUT_GOAL = 0.5  # of the ceiling's messages/s, at every scenario
TAIL_GOAL = 5.0  # p99 <= 5x p50, at the TAIL_AT scenario
TAIL_AT, FALL_FROM, FALL_TO = "50x32", "1x8", "1x32"
ME = "{ me { id } }"
CEILING = "driver"
NAMES = {"ours": "ours", CEILING: "driver alone (ceiling)"}


@dataclass(frozen=True)
class Scenario:
    rooms: int
    senders: int

    @property
    def key(self) -> str:
        return f"{self.rooms}x{self.senders}"

    @property
    def title(self) -> str:
        return f"{self.rooms} room{'s' if self.rooms > 1 else ''} × {self.senders}"

    def spread(self) -> str:
        """How the senders are spread over the rooms (a note under the table)."""
        r, c = self.rooms, self.senders
        if r == 1:
            return ""
        most, rest = divmod(c, r)
        if most == 0:
            busy = f"{c} rooms with one sender each, {r - c} without"
        elif rest:
            busy = f"{rest} rooms with {most + 1} senders, {r - rest} with {most}"
        else:
            busy = f"{most} senders in each room"
        return (f"{self.title}: {c} concurrent senders in all, spread round-robin (sender i "
                f"in room i mod {r}): {busy}.")


def scenarios_of(spec: str) -> list[Scenario]:
    out = []
    for part in (p.strip().lower() for p in spec.split(",") if p.strip()):
        rooms, _, senders = part.partition("x")
        if not (rooms.isdigit() and senders.isdigit() and int(rooms) and int(senders)):
            raise SystemExit(f"--write-scenarios: {part!r} is not ROOMSxSENDERS (e.g. 50x32)")
        out.append(Scenario(int(rooms), int(senders)))
    return out


# -- set-up -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cast:
    """The users, created once: a teacher who hosts every room, and the senders (students;
    user ids from `me`, for the ceiling's writes)."""

    host: str
    senders: list[tuple[str, str]]  # (token, user id)


async def make_cast(server: Server, count: int) -> Cast:
    settings = bench_settings()
    host = make_token(settings, Role.TEACHER, "Writes Host")
    tokens = [make_token(settings, Role.STUDENT, f"Writer {i}") for i in range(count)]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        ids = [(await gql(client, t, ME, {}))["me"]["id"] for t in tokens]
    return Cast(host, list(zip(tokens, ids, strict=True)))


async def fresh_rooms(server: Server, cast: Cast, scenario: Scenario, path: Path) -> Path:
    """The run's rooms, new, so that every run (ours or the ceiling, any round) starts from
    the same state: `scenario.rooms` PUBLIC rooms hosted by the teacher, sender i joined to
    room i mod rooms; the senders listed in `path`."""
    gate = asyncio.Semaphore(service.JOIN_CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

        async def create(j: int) -> str:
            async with gate:
                data = await gql(client, cast.host, service.CREATE_ROOM, {"input": {
                    "name": f"Writes bench {scenario.key} #{j}", "type": "TEACHING",
                    "visibility": "PUBLIC", "maxParticipants": scenario.senders + 10}})
            room: str = data["createRoom"]["id"]
            return room

        async def join(token: str, room: str) -> None:
            async with gate:
                joined = await gql(client, token, service.JOIN_ROOM, {"id": room})
            if joined["joinRoom"]["status"] != "JOINED":
                raise RuntimeError(f"join: {joined}")

        rooms = await asyncio.gather(*(create(j) for j in range(scenario.rooms)))
        senders = [(token, user, rooms[i % scenario.rooms])
                   for i, (token, user) in enumerate(cast.senders[:scenario.senders])]
        await asyncio.gather(*(join(token, room) for token, _, room in senders))
    text = json.dumps({"senders": [{"token": t, "user": u, "room": r} for t, u, r in senders]})
    await asyncio.to_thread(path.write_text, text)
    return path


# -- measuring ----------------------------------------------------------------------------

async def run_load(kind: str, scenario: Scenario, setup: Path, graph: EmbeddedGraphServer,
                   ours: Server, duration: float, warmup: float) -> dict[str, Any]:
    """One run of bench.writeload: ours' load on core 1, or the ceiling on core 0."""
    core = LOADGEN_CORE if kind == "ours" else SERVER_CORE
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "bench.writeload",
           "--kind", kind, "--setup", str(setup), "--rooms", str(scenario.rooms),
           "--senders", str(scenario.senders), "--duration", f"{duration:g}",
           "--warmup", f"{warmup:g}", "--db-pid", str(graph.pid or 0),
           "--pool-size", str(bench_settings().connection_pool_size)]
    if kind == "ours":
        cmd += ["--port", str(ours.port), "--pid", str(ours.pid)]
    env = dict(os.environ, NEO4J_URI=graph.bolt_uri, NEO4J_USER=graph.user,
               NEO4J_PASSWORD=graph.password, NEO4J_DATABASE=graph.database or "")
    token = _metrics_token()
    if token:
        env["METRICS_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    failed = {"kind": kind, "scenario": scenario.key}
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration + warmup + 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return failed | {"failed": "timed out"}
    except BaseException:  # cancelled (the bench was killed): no orphan load
        proc.kill()
        raise
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        return failed | {"failed": f"exit {proc.returncode}: {err.decode()[-800:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _metrics_token() -> str | None:
    """The bearer token our server's /metrics wants: the one bench.service starts it with,
    if it sets one (it overrides the environment's), else the inherited METRICS_TOKEN."""
    token = getattr(service, "METRICS_TOKEN", None)
    return token if isinstance(token, str) else os.environ.get("METRICS_TOKEN")


async def measure_round(scenarios: list[Scenario], cast: Cast, graph: EmbeddedGraphServer,
                        work: Path, args: argparse.Namespace,
                        round_no: int) -> list[dict[str, Any]]:
    """Our server started afresh (idle while the ceiling runs, as in the HTTP bench), each
    scenario on ours and the ceiling back to back, the ceiling first in odd rounds; every
    run in rooms of its own, set up through ours."""
    ours = Server("ours", work, graph=graph)
    kinds = ["ours", CEILING] if round_no % 2 == 0 else [CEILING, "ours"]
    results = []
    try:
        await ours.start().wait_ready()
        for scenario in scenarios:
            for kind in kinds:
                setup = await fresh_rooms(ours, cast, scenario, work / "writes-run.json")
                # The set-up's writes keep the database busy for a moment.
                await drained(ours.pid, graph.pid)
                result = await run_load(kind, scenario, setup, graph, ours,
                                        args.write_duration, args.write_warmup)
                result["round"] = round_no + 1
                results.append(result)
                print(f"writes round {round_no + 1}, {scenario.key} {kind}: "
                      f"{json.dumps(result)}", file=sys.stderr)
    finally:
        ours.stop()
    return results


async def measure(args: argparse.Namespace, graph: EmbeddedGraphServer,
                  work: Path) -> dict[str, Any]:
    scenarios = scenarios_of(args.write_scenarios)
    ours = Server("ours", work, graph=graph)
    try:
        await ours.start().wait_ready()
        cast = await make_cast(ours, max(s.senders for s in scenarios))
        # The JVM compiles the write path in the first seconds: once, before the rounds, at
        # the most concurrent scenario (its result is not reported).
        busiest = max(scenarios, key=lambda s: (s.senders, s.rooms))
        setup = await fresh_rooms(ours, cast, busiest, work / "writes-run.json")
        jit = JIT_WARMUP_S / 2 if args.quick else JIT_WARMUP_S
        await run_load("ours", busiest, setup, graph, ours, jit, 0)
    finally:
        ours.stop()
    runs: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        started = time.monotonic()
        runs += await measure_round(scenarios, cast, graph, work, args, round_no)
        print(f"writes round {round_no + 1}: {time.monotonic() - started:.0f} s",
              file=sys.stderr)
    return {"runs": runs, "scenarios": [s.key for s in scenarios],
            "titles": {s.key: s.title for s in scenarios},
            "spread": [s.spread() for s in scenarios if s.spread()]}


# -- the report ---------------------------------------------------------------------------

def best_of(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (scenario, kind): the best messages/s, p50 and p99 of the run with the lowest p99
    (one run's, so that p99/p50 is a real run's), errors and retries summed over rounds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["scenario"], run["kind"]), []).append(run)
    best = {}
    for key, group in groups.items():
        ok = [r for r in group if "messages_per_s" in r and r["messages"]]
        if not ok:
            best[key] = group[0]
            continue
        top = dict(max(ok, key=lambda r: r["messages_per_s"]), rounds=len(ok))
        calm = min(ok, key=lambda r: r["p99_ms"])
        top["p50_ms"], top["p99_ms"] = calm["p50_ms"], calm["p99_ms"]
        top["messages_all"] = sum(r["messages"] for r in ok)
        top["errors"] = {k: sum(r["errors"].get(k, 0) for r in ok)
                         for k in {k for r in ok for k in r["errors"]}}
        top["retries"] = {k: sum(r["retries"][k] for r in ok) for k in ("conflict",
                                                                         "unavailable")}
        best[key] = top
    return best


def _x(value: float, base: float | None) -> str:
    return f"{value / base:.2f}×" if base else "–"


def _retries(r: dict[str, Any], reason: str) -> str:
    n = r["retries"][reason]
    return f"{n:,} ({1000 * n / max(1, r['messages_all']):.1f}/1k)"


def _row(title: str, kind: str, r: dict[str, Any], base: dict[str, Any]) -> str:
    if "messages_per_s" not in r:
        return f"| {title} | {NAMES[kind]} | failed: {r.get('failed')} |" + " |" * 12
    errors = ", ".join(f"{k} {v:,}" for k, v in sorted(r["errors"].items())) or "0"
    loadgen = f"{r['loadgen_cpu']:.0%}" if r.get("loadgen_cpu") is not None else "–"
    return (f"| {title} | {NAMES[kind]} | {r['messages_per_s']:,.0f} "
            f"| {_x(r['messages_per_s'], base.get('messages_per_s'))} | {r['p50_ms']} "
            f"| {_x(r['p50_ms'], base.get('p50_ms'))} | {r['p99_ms']} "
            f"| {_x(r['p99_ms'], base.get('p99_ms'))} | {_x(r['p99_ms'], r['p50_ms'])} "
            f"| {errors} | {_retries(r, 'conflict')} | {_retries(r, 'unavailable')} "
            f"| {r['process_cpu']:.0%} | {r['db_cpu']:.0%} | {loadgen} |")


def table(best: dict[tuple[str, str], dict[str, Any]], order: list[str],
          titles: dict[str, str]) -> str:
    rows = ["| scenario | sender | messages/s | × ceiling | p50 ms | × ceiling | p99 ms "
            "| × ceiling | p99/p50 | errors | conflict retries (per 1k msgs) "
            "| unavailable retries | process CPU (core 0) | db CPU | loadgen CPU |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for key in order:
        base = best.get((key, CEILING), {})
        for kind in (CEILING, "ours"):
            if (key, kind) in best:
                rows.append(_row(titles.get(key, key), kind, best[(key, kind)], base))
    return "\n".join(rows)


def _verdict(ok: bool, missed: str) -> str:
    return "met" if ok else f"**MISSED** {missed}"


def _rate(best: dict[tuple[str, str], dict[str, Any]], key: str,
          kind: str = "ours") -> float | None:
    value = best.get((key, kind), {}).get("messages_per_s")
    return float(value) if value else None


def goals(best: dict[tuple[str, str], dict[str, Any]], order: list[str],
          titles: dict[str, str]) -> list[str]:
    """Each goal's figure and verdict (goals whose scenario did not run are left out)."""
    lines = []
    for key in order:
        ours, ceiling = _rate(best, key), _rate(best, key, CEILING)
        if ours is not None and ceiling is not None:
            ratio = ours / ceiling
            missed = (f"by {THROUGHPUT_GOAL - ratio:.2f}× ({ours:,.0f} against the "
                      f"{THROUGHPUT_GOAL * ceiling:,.0f} needed)")
            lines.append(f"- {titles.get(key, key)}: messages/s ≥ {THROUGHPUT_GOAL}× the "
                         f"ceiling: {ratio:.2f}×, {_verdict(ratio >= THROUGHPUT_GOAL, missed)}")
    low, high = _rate(best, FALL_FROM), _rate(best, FALL_TO)
    if low is not None and high is not None:
        change = high / low - 1
        lines.append(f"- {titles.get(FALL_FROM)} → {titles.get(FALL_TO)}: messages/s not "
                     f"falling: {low:,.0f} → {high:,.0f} ({100 * change:+.1f} %), "
                     + _verdict(change >= 0, f"by {-100 * change:.1f} %"))
    return lines + _tail_goal(best, titles.get(TAIL_AT, TAIL_AT))


def _tail_goal(best: dict[tuple[str, str], dict[str, Any]], title: str) -> list[str]:
    tail, base = best.get((TAIL_AT, "ours"), {}), best.get((TAIL_AT, CEILING), {})
    if tail.get("p50_ms", -1) <= 0:
        return []
    ratio = tail["p99_ms"] / tail["p50_ms"]
    context = f"; the ceiling's {base['p99_ms'] / base['p50_ms']:.1f}×" \
        if base.get("p50_ms", -1) > 0 else ""
    return [f"- {title}: p99 ≤ {TAIL_GOAL:g}× p50: {tail['p99_ms']} / {tail['p50_ms']} ms "
            f"= {ratio:.1f}×{context}, "
            + _verdict(ratio <= TAIL_GOAL, f"by {ratio - TAIL_GOAL:.1f}×")]


def report(result: dict[str, Any], seconds: float, args: argparse.Namespace,
           cores: int) -> tuple[str, list[AuditCost], bool]:
    """The printed tables and goals, no audit figure, and whether every run succeeded
    without errors."""
    best = best_of(result["runs"])
    order = result["scenarios"]
    ok = all("messages_per_s" in r and r["messages"] and not r["errors"]
             for r in result["runs"])
    text = "\n".join([
        f"## Durable writes (`sendMessage`), {cores} cores (ours and the ceiling: core 0 "
        f"with the database's JVM; ours' load generator: core 1), {args.write_warmup:g} s "
        f"warm-up + {args.write_duration:g} s measured, closed loop, best of {args.rounds}, "
        f"{seconds:.0f} s\n",
        table(best, order, result["titles"]),
        *(f"\n{note}" for note in result["spread"]),
        _batching(best, order, result["titles"]),
        "\nCeiling: the driver alone (one process on core 0) calling "
        "graph_db.group_commit.GroupCommit.send, the resolver's write, with the same senders "
        "in the same rooms. messages/s: best round; p50/p99 (and p99/p50): the round with the "
        "lowest p99; errors: all rounds, warm-ups included; retries: all rounds, "
        "collab_db_retries_total over the measured windows (per 1k: per 1,000 messages "
        "answered). CPU: share of one core "
        "in the measured window (process: our server, or the ceiling's process).\n",
        "Goals:\n", *goals(best, order, result["titles"]),
    ])
    return text, [], ok


def _batching(best: dict[tuple[str, str], dict[str, Any]], order: list[str],
              titles: dict[str, str]) -> str:
    """How many sends the ceiling's transactions held (group commit; best rounds)."""
    found = [f"{titles.get(key, key)} {per:g}" for key in order
             if (per := best.get((key, CEILING), {}).get("sends_per_transaction"))]
    return f"\nSends per transaction (the ceiling's group commit): {', '.join(found)}." \
        if found else ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("writes")
    g.add_argument("--write-scenarios", default=DEFAULT_SCENARIOS,
                   help=f"ROOMSxSENDERS, comma-separated (default {DEFAULT_SCENARIOS}); "
                        "sender i in room i mod ROOMS")
    g.add_argument("--write-duration", type=float,
                   help=f"measured seconds per run (default {DURATION_S:g}; --quick: "
                        f"{QUICK_DURATION_S:g})")
    g.add_argument("--write-warmup", type=float,
                   help=f"warm-up seconds per run (default {WARMUP_S:g}; --quick: "
                        f"{QUICK_WARMUP_S:g})")


def resolve(args: argparse.Namespace) -> None:
    """Defaults that depend on --quick."""
    if args.write_duration is None:
        args.write_duration = QUICK_DURATION_S if args.quick else DURATION_S
    if args.write_warmup is None:
        args.write_warmup = QUICK_WARMUP_S if args.quick else WARMUP_S

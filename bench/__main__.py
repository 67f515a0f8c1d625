"""`python -m bench [fanout | http | writes | storm]`: ours against raw Starlette baselines
(writes: against the database driver alone), and what the audit trail costs. Without an
argument every bench runs, one after the other, against one graph server.

- fanout (bench.fanout): `roomEvents` subscriptions against a raw WebSocket broadcast, at
  N = 100, 1,000, 5,000 subscribers; ours also with the audit trail off at N = 1,000;
- http (bench.httpbench): `me`, a rooms page and a message page over HTTP POST (wrk, 16
  connections) against a raw JSON endpoint, ours with the trail on and off; Cypher round
  trips per operation;
- writes (bench.writes): `sendMessage` in a closed loop at 1 room x 1, 8, 32 senders and 50
  rooms x 32, against the driver alone running the same write (the database's ceiling);
- storm (bench.storm): N = 1,000 and 5,000 clients reconnecting at once (connect, init,
  resume `roomEvents` after a cursor, first event) against a raw handshake.

Servers run pinned to core 0 (ours with the embedded graph database's JVM, started once here),
load generators pinned to core 1. The audit trail's cost (trail on against off, same run) is
printed last, against its goal (at most 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import fanout, httpbench, storm, writes
from bench.report import AuditCost, audit_summary, audit_table, loadavg, measured
from bench.service import graph_server, raise_nofile


@dataclass
class Outcome:
    texts: list[str] = field(default_factory=list)
    costs: list[AuditCost] = field(default_factory=list)
    ok: bool = True
    raw: dict[str, Any] = field(default_factory=dict)

    async def part(self, name: str, run: Awaitable[Any],
                   report: Callable[[Any, float], tuple[str, list[AuditCost], bool]]) -> None:
        """One bench: run, report, with the load average around it."""
        load0, started = loadavg(), time.monotonic()
        result = await run
        text, costs, ok = report(result, time.monotonic() - started)
        self.texts.append(f"{text}\n\nLoad average before / after: {load0} / {loadavg()}")
        self.costs += measured(costs)
        self.ok &= ok
        self.raw[name] = result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


async def run(args: argparse.Namespace, profile_dir: Path | None) -> Outcome:
    outcome = Outcome()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        async with graph_server(work / "graph") as graph:
            if args.what in ("fanout", "all"):
                await outcome.part(
                    "fanout", fanout.measure(args, graph, work, profile_dir),
                    lambda runs, took: fanout.report(runs, took, cores, profile_dir))
            if args.what in ("http", "all"):
                await outcome.part(
                    "http", httpbench.measure(args, graph, work),
                    lambda result, took: httpbench.report(result, took, args, cores))
            if args.what in ("writes", "all"):
                await outcome.part(
                    "writes", writes.measure(args, graph, work),
                    lambda result, took: writes.report(result, took, args, cores))
            if args.what in ("storm", "all"):
                await outcome.part(
                    "storm", storm.measure(args, graph, work),
                    lambda runs, took: storm.report(runs, took, cores, args))
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    httpbench.resolve(args)
    writes.resolve(args)
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 cores; server and loadgen will share one", file=sys.stderr)
    raise_nofile()
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    # Killed (timeout, kill): unwind, so that the benches stop the servers they started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    outcome = asyncio.run(run(args, profile_dir))
    print(f"# python -m bench {args.what}: {os.cpu_count()} cores ({_cpu_model()}), "
          f"{time.monotonic() - started:.0f} s\n")
    for text in outcome.texts:
        print(text + "\n")
    print("## Audit trail cost (ours, trail on against off, same run)\n")
    print(audit_table(outcome.costs) if outcome.costs else "(no run with the trail off)")
    print("\nCost: the share of throughput lost (1 - on/off), or the latency added (on/off - 1);"
          " negative: the trail-on run was the faster one (noise).")
    print(audit_summary(outcome.costs))
    if args.json:
        Path(args.json).write_text(json.dumps(outcome.raw, indent=1))
    return 0 if outcome.ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=["fanout", "http", "writes", "storm", "all"],
                   default="all",
                   help="which bench (default: all: fan-out, HTTP, writes, then storm)")
    p.add_argument("--quick", action="store_true",
                   help="fan-out: N = 100, 1,000 and half the messages; HTTP: 2 + 4 s runs")
    p.add_argument("--rounds", type=int, default=2,
                   help="rounds (alternating which server goes first); best of them reported")
    p.add_argument("--json", help="also write every run's raw results here")
    fanout.add_arguments(p)
    httpbench.add_arguments(p)
    writes.add_arguments(p)
    storm.add_arguments(p)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

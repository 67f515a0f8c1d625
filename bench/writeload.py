"""The writes bench's load: closed-loop `sendMessage` senders for one scenario (R rooms x C
senders), one process, printing one JSON line.

- `--kind ours`: run as `taskset -c 1 python -m bench.writeload ...`; each sender is a user
  with its own keep-alive HTTP connection (bench.wsclient.Http) posting the mutation to our
  server, the next one as soon as the previous answered. Write retries are the delta of our
  server's `collab_db_retries_total` (GET /metrics) across the measured window.
- `--kind driver`: the database's ceiling, run as `taskset -c 0 ...` next to the database's
  JVM (where our server runs): the same senders, rooms and duration, each calling what the
  sendMessage resolver writes with, graph_db.group_commit.GroupCommit.send (so the same
  Cypher, graph_db.messages.send_in, in the same transactions: a room's concurrent sends
  together, on the same per-room lock), through one GraphDB with our server's pool size;
  retries from this process's own metric, and the sends per transaction.

The set-up file (bench.writes: fresh rooms for every run) lists the senders; sender i of RxC
is a member of room i mod R. Only answers that arrive in the measured window count; errors,
at any time of the run, by GraphQL `extensions.code` (ours) or exception class (driver).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.loadgen import cpu_s
from bench.wsclient import Http, pct
from graph_db.driver import GraphDB
from graph_db.group_commit import GroupCommit
from graph_db.messages import NewMessage
from observability.metrics import REGISTRY

SEND = ("mutation($r: ID!, $c: String!) {"
        " sendMessage(roomId: $r, input: {content: $c}) { id } }")
TEXT = "Ward round note: bloods back, potassium 3.1, repleting orally; recheck in the morning."
RETRIES = re.compile(rb'^collab_db_retries_total\{reason="(\w+)"\} ([0-9.e+]+)$', re.M)
REASONS = ("conflict", "unavailable")
DRAIN_S = 60.0  # a send still in flight when the window closes: bounded wait for it

Send = Callable[[int, int], Awaitable[str | None]]  # (sender, k) -> error code or None


@dataclass(frozen=True)
class Sender:
    room: str
    token: str
    user: str


def senders_of(setup: dict[str, Any], rooms: int, count: int) -> list[Sender]:
    """The run's senders as bench.writes set them up (sender i in room i mod rooms)."""
    out = [Sender(s["room"], s["token"], s["user"]) for s in setup["senders"]]
    used = len({s.room for s in out})
    if len(out) != count or used != min(rooms, count):
        raise SystemExit(f"set-up: {len(out)} senders in {used} rooms, not {rooms}x{count}")
    return out


def content(scenario: str, i: int, k: int) -> str:
    return f"writes|{scenario}|{i}|{k}| {TEXT}"


@dataclass
class Tally:
    window: tuple[int, int]  # monotonic ns: answers inside count
    lat: list[int] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    first_error: str = ""
    sent: int = 0

    async def sender(self, i: int, send: Send) -> None:
        """Closed loop: the next message as soon as the previous one is answered."""
        start, end = self.window
        k = 0
        while (began := time.monotonic_ns()) < end:
            error = await send(i, k)
            done = time.monotonic_ns()
            k += 1
            self.sent += 1
            if error is not None:  # any error fails the run, in the warm-up too
                self.errors[error] += 1
            elif start <= done <= end:
                self.lat.append(done - began)


class Ours:
    """Senders as HTTP clients of our server; retries read from its /metrics."""

    def __init__(self, args: argparse.Namespace, senders: list[Sender], tally: Tally) -> None:
        self.args, self.senders, self.tally = args, senders, tally
        self.conns = [Http(args.host, args.port) for _ in senders]
        self.auth = [f"Authorization: Bearer {s.token}\r\n" for s in senders]
        # bench.writes hands down the token our server's /metrics was started with.
        token = os.environ.get("METRICS_TOKEN")
        self.metrics_headers = {"authorization": f"Bearer {token}"} if token else {}

    async def send(self, i: int, k: int) -> str | None:
        s = self.senders[i]
        body = orjson.dumps({"query": SEND, "variables": {
            "r": s.room, "c": content(self.args.scenario, i, k)}})
        try:
            status, answer = await self.conns[i].post("/graphql", body, self.auth[i])
        except Exception as exc:
            return self._fail(type(exc).__name__, repr(exc))
        if status != 200 or b'"errors"' in answer:
            return self._fail(_code(status, answer), answer[:300].decode(errors="replace"))
        return None

    def _fail(self, code: str, text: str) -> str:
        self.tally.first_error = self.tally.first_error or text
        return code

    async def retries(self) -> dict[str, float]:
        url = f"http://{self.args.host}:{self.args.port}/metrics"
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(url, headers=self.metrics_headers)
        response.raise_for_status()
        found: dict[str, float | None] = {
            m[1].decode(): float(m[2]) for m in RETRIES.finditer(response.content)}
        return _all_reasons(found)

    def process_cpu(self) -> float:
        return cpu_s(self.args.pid)

    def batching(self) -> tuple[int, int] | None:
        return None  # our server does not expose its group commit's counts

    async def close(self) -> None:
        for conn in self.conns:
            if conn.writer is not None:
                conn.writer.close()


def _code(status: int, answer: bytes) -> str:
    """The first error's extensions.code (HTTP <status> when the answer is no GraphQL)."""
    try:
        errors = orjson.loads(answer).get("errors") or [{}]
        return str((errors[0].get("extensions") or {}).get("code", "no code"))
    except (orjson.JSONDecodeError, AttributeError):
        return f"HTTP {status}"


def _all_reasons(found: dict[str, float | None]) -> dict[str, float]:
    """A renamed or missing series must not read as "no retries"."""
    values = {r: found.get(r) for r in REASONS}
    missing = [r for r, v in values.items() if v is None]
    if missing:
        raise RuntimeError(f"collab_db_retries_total{{reason}} not exposed for {missing}")
    return {r: float(v or 0.0) for r, v in values.items()}


class Driver:
    """The ceiling: the resolver's write (GroupCommit.send) through one GraphDB, no
    server."""

    def __init__(self, args: argparse.Namespace, senders: list[Sender], tally: Tally) -> None:
        self.args, self.senders, self.tally = args, senders, tally
        env = os.environ
        self.db = GraphDB.connect(env["NEO4J_URI"], env["NEO4J_USER"], env["NEO4J_PASSWORD"],
                                  database=env.get("NEO4J_DATABASE") or None,
                                  pool_size=args.pool_size)
        self.sends = GroupCommit(self.db)  # as app.py makes it for the resolver

    async def send(self, i: int, k: int) -> str | None:
        s = self.senders[i]
        # What resolvers/messages.py builds for a plain post: no parent, no client id, no
        # mention in this content.
        new = NewMessage(
            id=str(uuid.uuid4()), room_id=s.room, author_id=s.user,
            content=content(self.args.scenario, i, k), parent_id=None, root_id=None,
            client_message_id=None, mention_ids=[])
        try:
            sent = await self.sends.send(new)
        except Exception as exc:
            self.tally.first_error = self.tally.first_error or repr(exc)[:300]
            return type(exc).__name__
        return None if sent is not None else "NOT_A_MEMBER"

    async def retries(self) -> dict[str, float]:
        return _all_reasons({r: REGISTRY.get_sample_value("collab_db_retries_total",
                                                           {"reason": r}) for r in REASONS})

    def process_cpu(self) -> float:
        return time.process_time()

    def batching(self) -> tuple[int, int] | None:
        """Transactions written and the sends in them, so far."""
        return self.sends.batches, self.sends.sent

    async def close(self) -> None:
        await self.sends.close()
        await self.db.close()


async def run(args: argparse.Namespace, senders: list[Sender]) -> dict[str, Any]:
    now = time.monotonic_ns()
    window = (now + int(args.warmup * 1e9), now + int((args.warmup + args.duration) * 1e9))
    tally = Tally(window)
    client = Ours(args, senders, tally) if args.kind == "ours" else Driver(args, senders, tally)
    tasks = [asyncio.create_task(tally.sender(i, client.send)) for i in range(len(senders))]
    try:
        await asyncio.sleep(max(0.0, (window[0] - time.monotonic_ns()) / 1e9))
        before = await _snapshot(args, client)
        await asyncio.sleep(max(0.0, (window[1] - time.monotonic_ns()) / 1e9))
        after = await _snapshot(args, client)
        await asyncio.wait_for(asyncio.gather(*tasks), DRAIN_S)
    finally:
        for task in tasks:
            task.cancel()
        await client.close()
    return _result(args, tally, before, after)


async def _snapshot(args: argparse.Namespace, client: Ours | Driver) -> dict[str, Any]:
    return {"t": time.monotonic(), "retries": await client.retries(),
            "process": client.process_cpu(), "db": cpu_s(args.db_pid) if args.db_pid else 0.0,
            "self": time.process_time(), "batching": client.batching()}


def _result(args: argparse.Namespace, tally: Tally, before: dict[str, Any],
            after: dict[str, Any]) -> dict[str, Any]:
    span = after["t"] - before["t"]
    lat = sorted(tally.lat)
    ours = args.kind == "ours"
    return {
        "kind": args.kind, "scenario": args.scenario, "rooms": args.rooms,
        "senders": args.senders, "messages": len(lat), "seconds": round(span, 2),
        "messages_per_s": round(len(lat) / span, 1), "p50_ms": pct(lat, 0.5),
        "p90_ms": pct(lat, 0.9), "p99_ms": pct(lat, 0.99), "max_ms": pct(lat, 1.0),
        "errors": dict(tally.errors), "first_error": tally.first_error,
        "retries": {r: round(after["retries"][r] - before["retries"][r]) for r in REASONS},
        "process_cpu": round((after["process"] - before["process"]) / span, 3),
        "db_cpu": round((after["db"] - before["db"]) / span, 3),
        "loadgen_cpu": round((after["self"] - before["self"]) / span, 3) if ours else None,
        "sent_in_all": tally.sent, "sends_per_transaction": _per_transaction(before, after),
    }


def _per_transaction(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    if before["batching"] is None or after["batching"] is None:
        return None
    batches = after["batching"][0] - before["batching"][0]
    sent = after["batching"][1] - before["batching"][1]
    return round(sent / batches, 2) if batches else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.writeload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["ours", "driver"], required=True)
    p.add_argument("--setup", required=True, help="the set-up JSON (bench.writes)")
    p.add_argument("--rooms", type=int, required=True)
    p.add_argument("--senders", type=int, required=True, help="concurrent senders in all")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before the window")
    p.add_argument("--db-pid", type=int, default=0, help="the graph database (CPU only)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="ours: its port")
    p.add_argument("--pid", type=int, default=0, help="ours: its process (CPU only)")
    p.add_argument("--pool-size", type=int, default=20, help="driver: connection pool size "
                   "(ours' CONNECTION_POOL_SIZE); NEO4J_* from the environment")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        p.error("loopback addresses only")
    if args.kind == "ours" and not (args.port and args.pid):
        p.error("--kind ours needs --port and --pid")
    args.scenario = f"{args.rooms}x{args.senders}"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup: dict[str, Any] = orjson.loads(Path(args.setup).read_bytes())
    senders = senders_of(setup, args.rooms, args.senders)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args, senders))
    else:  # as our server runs: the ceiling process gets the same event loop
        result = uvloop.run(run(args, senders))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()

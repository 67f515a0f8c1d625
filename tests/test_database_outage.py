"""The graph database goes away in the middle of traffic and comes back.

1,000 messages are sent by five concurrent senders (each retrying with its clientMessageId
until acknowledged) while the embedded database's JVM is SIGKILLed at random points and the
service restarts it (and, separately, while an external server given by NEO4J_URI is stopped
and started again); three followers resubscribe with their last cursor whenever told. After:
every acknowledged message is stored exactly once, the event log has one event per message,
gap-free, and every follower saw each message exactly once, in order. Operations answer
SERVICE_UNAVAILABLE meanwhile: no 5xx, no other code, no hang. Real processes throughout: a
`python -m app` service with its embedded ArcadeDB."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from realtime import cursor as event_cursor
from tests.conftest import SECRET, make_settings
from tests.outage import Follower, Tally, send_until_acked
from tests.personas import People, Persona, make_room
from tests.processes import GraphServer, Service, java_pids
from tests.rt_helpers import JOIN, all_messages

SENDERS, FOLLOWERS, OUTAGES = 5, 3, 3


ENV = {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET, "LOG_LEVEL": "INFO",
       "PRESENCE_GRACE_SECONDS": "0.5", "NEO4J_URI": "", "REDIS_URL": ""}
Outage = Callable[[], Awaitable[None]]


@contextlib.contextmanager
def serving(tmp_path: Path, env: dict[str, str]) -> Iterator[Service]:
    running = Service("outage", {**ENV, **env}, tmp_path).start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


async def wait_ready(url: str, timeout: float) -> float:
    """Seconds until /readyz says 200 again."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            assert time.monotonic() - started < timeout, "the database did not come back"
            await asyncio.sleep(0.1)


async def outages_at(acked: list[Any], marks: list[int], outage: Outage, url: str,
                     took: list[float]) -> None:
    """An outage each time the acknowledged count passes a mark; how long each lasted."""
    for mark in marks:
        while len(acked) < mark:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await outage()
        await wait_ready(url, 90)
        took.append(time.monotonic() - started)


async def test_the_embedded_database_killed_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    """SIGKILL of the JVM at random points: the service restarts it by itself."""
    data_dir = tmp_path / "graph"

    async def kill() -> None:
        (pid,) = java_pids(data_dir)
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)  # /readyz may answer before the death is noticed

    with serving(tmp_path, {"GRAPH_DATA_DIR": str(data_dir)}) as service:
        await run(tmp_path, service, kill, per_sender=200)


async def test_an_external_database_restarted_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    """NEO4J_URI: the server is stopped for 3 s at random points and started again at the
    same address; the service's driver reconnects by itself."""
    graph = GraphServer(tmp_path / "external").start()
    try:
        async def restart() -> None:
            await asyncio.to_thread(graph.restart, 3.0)

        with serving(tmp_path, graph.env) as service:
            await run(tmp_path, service, restart, per_sender=60)
    finally:
        graph.stop()


async def run(tmp_path: Path, service: Service, outage: Outage, per_sender: int) -> None:
    people = People(make_settings(tmp_path), service.url)
    try:
        await traffic(people, service, outage, per_sender)
    finally:
        await people.aclose()


async def traffic(people: People, service: Service, outage: Outage, per_sender: int) -> None:
    host = people.make_user("doctor")
    senders = [people.make_user("doctor") for _ in range(SENDERS)]
    watchers = [people.make_user("student") for _ in range(FOLLOWERS)]
    room = (await make_room(host, visibility="PUBLIC", name="Outage"))["id"]
    for who in (*senders, *watchers):
        await who.gql(JOIN, id=room)
    tally = Tally()
    start = await send_until_acked(host, room, "start", "start", tally)
    after = event_cursor.encode(room, start["seq"])
    followers = [Follower(service.ws_url, w, room, after) for w in watchers]
    for follower in followers:
        follower.start()

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    total = SENDERS * per_sender
    marks = sorted(rng.sample(range(total // 10, total - total // 10), OUTAGES))
    acked: list[tuple[str, dict[str, Any]]] = []
    outages: list[float] = []

    async def sender(who: Persona, n: int) -> None:
        for i in range(per_sender):
            cid = f"{n}-{i}"
            acked.append((cid, await send_until_acked(who, room, f"m {cid}", cid, tally)))

    started = time.monotonic()
    killer = asyncio.create_task(outages_at(acked, marks, outage, service.url, outages))
    await asyncio.wait_for(asyncio.gather(*(sender(s, n) for n, s in enumerate(senders))), 600)
    await asyncio.wait_for(killer, 120)
    elapsed = time.monotonic() - started
    last = max(m["seq"] for _, m in acked)
    try:
        for follower in followers:
            await follower.reach(last, 60)
    finally:
        for follower in followers:
            await follower.stop()
    print(f"\nseed {seed}: {total} messages in {elapsed:.1f} s, outages after {marks} acks, "
          f"outages {[round(o, 1) for o in outages]} s; answers {dict(tally.statuses)}, "
          f"codes {dict(tally.codes)}, transport errors {tally.transport_errors}; "
          f"followers' ends {[dict(f.ends) for f in followers]}")
    check(acked, start, await all_messages(host, room), followers, tally)


def check(acked: list[tuple[str, dict[str, Any]]], start: dict[str, Any],
          stored: list[dict[str, Any]], followers: list[Follower], tally: Tally) -> None:
    total = len(acked)
    assert len({cid for cid, _ in acked}) == total
    ids = [m["id"] for _, m in acked]
    assert len(set(ids)) == total, "one message acknowledged under two ids"
    stored_after = [m for m in stored if m["seq"] > start["seq"]]
    assert len(stored_after) == total, "a message stored twice, or one lost"
    assert {m["id"]: m["seq"] for m in stored_after} == {m["id"]: m["seq"] for _, m in acked}
    expected = sorted((m["seq"], m["id"]) for m in stored_after)
    assert [s for s, _ in expected] == list(range(start["seq"] + 1, start["seq"] + total + 1))
    for follower in followers:
        assert follower.received == expected, "a follower missed or repeated a message"
    assert set(tally.codes) <= {"SERVICE_UNAVAILABLE"}, tally.codes
    assert all(status < 500 for status in tally.statuses), tally.statuses

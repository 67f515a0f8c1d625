"""The assistant's quotas (assistant/limits.py): one behaviour suite run against the in-process
quotas and the Redis ones (a real Redis, every test under a prefix of its own, its keys deleted
after). Time is a fake clock both read, so windows, leases and UTC midnights pass at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from assistant.limits import (
    BUDGET_EXCEEDED,
    RATE_LIMITED,
    Grant,
    MemoryQuotas,
    QuotaConfig,
    QuotaRefused,
    Quotas,
    RedisQuotas,
)

REDIS_URL = os.environ.get("ASSISTANT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START = datetime(2030, 3, 4, 12, 0, tzinfo=UTC).timestamp()  # noon: 43,200 s to midnight
ROOMY = QuotaConfig(user_requests=100, room_requests=100, max_concurrency=100,
                    room_daily_tokens=0)


class FakeTime:
    def __init__(self) -> None:
        self.now = START

    def clock(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def advance(self, seconds: float) -> None:
        self.now += seconds


Make = Callable[..., Quotas]  # make(config, lease_s=...): another instance sharing the state


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def prefix() -> str:
    return f"test:ai:{uuid.uuid4().hex}:"  # this test's keys only


@contextlib.asynccontextmanager
async def redis_at(prefix: str) -> AsyncIterator[Redis]:
    """A client of the real Redis; the keys under `prefix` deleted after."""
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()


@pytest.fixture
async def redis(prefix: str) -> AsyncIterator[Redis]:
    async with redis_at(prefix) as client:
        yield client


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest, fake: FakeTime,
               prefix: str) -> AsyncIterator[Make]:
    made: list[Quotas] = []
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(redis_at(prefix)) \
            if request.param == "redis" else None

        def new(config: QuotaConfig, lease_s: float = 180.0) -> Quotas:
            quotas: Quotas
            if client is not None:
                quotas = RedisQuotas(client, config, prefix=prefix, lease_s=lease_s,
                                     clock=fake.clock)
            elif made:  # in one process, "another instance" is the same one
                quotas = made[0]
            else:
                quotas = MemoryQuotas(config, lease_s=lease_s, clock=fake.clock,
                                      wall=fake.wall)
            made.append(quotas)
            return quotas

        yield new
        for quotas in made:
            await quotas.aclose()


async def refused(quotas: Quotas, user: str, room: str, estimate: int = 0) -> QuotaRefused:
    with pytest.raises(QuotaRefused) as caught:
        await quotas.admit(user, room, uuid.uuid4().hex, estimate)
    return caught.value


async def answer(quotas: Quotas, user: str, room: str, estimate: int = 0,
                 used: int | None = None) -> Grant:
    """An admitted answer, finished at once."""
    grant = await quotas.admit(user, room, uuid.uuid4().hex, estimate)
    await quotas.finish(grant, estimate if used is None else used)
    return grant


async def test_user_rate_counts_across_rooms_and_says_when_one_frees(
        make: Make, fake: FakeTime) -> None:
    quotas = make(QuotaConfig(user_requests=2, user_period_s=60, room_daily_tokens=0))
    await answer(quotas, "ann", "r1")
    fake.advance(10)
    await answer(quotas, "ann", "r2")
    fake.advance(10)
    refusal = await refused(quotas, "ann", "r3")
    assert (refusal.code, refusal.reason) == (RATE_LIMITED, "user_rate")
    assert refusal.retry_after == pytest.approx(40, abs=0.01)  # the first admit leaves then
    await answer(quotas, "bob", "r3")  # another user is not limited by ann's rate
    fake.advance(40.01)
    await answer(quotas, "ann", "r3")


async def test_room_rate_counts_every_user(make: Make, fake: FakeTime) -> None:
    quotas = make(QuotaConfig(room_requests=2, room_period_s=100, room_daily_tokens=0))
    await answer(quotas, "ann", "r1")
    fake.advance(30)
    await answer(quotas, "bob", "r1")
    refusal = await refused(quotas, "cid", "r1")
    assert (refusal.code, refusal.reason) == (RATE_LIMITED, "room_rate")
    assert refusal.retry_after == pytest.approx(70, abs=0.01)
    await answer(quotas, "cid", "r2")  # other rooms are not held up
    fake.advance(70.01)
    await answer(quotas, "cid", "r1")


async def test_one_answer_in_flight_per_user_per_room(make: Make) -> None:
    quotas = make(ROOMY)
    first = await quotas.admit("ann", "r1", "reply-1", 0)
    refusal = await refused(quotas, "ann", "r1")
    assert (refusal.code, refusal.reason) == (RATE_LIMITED, "in_flight")
    assert 1 <= refusal.retry_after <= 5
    other_room = await quotas.admit("ann", "r2", "reply-2", 0)
    other_user = await quotas.admit("bob", "r1", "reply-3", 0)
    await quotas.finish(first, 0)
    again = await quotas.admit("ann", "r1", "reply-4", 0)
    for grant in (other_room, other_user, again):
        await quotas.finish(grant, 0)


async def test_concurrency_cap(make: Make) -> None:
    quotas = make(QuotaConfig(max_concurrency=2, room_daily_tokens=0))
    a = await quotas.admit("ann", "r1", "reply-a", 0)
    await quotas.admit("bob", "r2", "reply-b", 0)
    refusal = await refused(quotas, "cid", "r3")
    assert (refusal.code, refusal.reason) == (RATE_LIMITED, "concurrency")
    assert 1 <= refusal.retry_after <= 5
    await quotas.finish(a, 0)
    await quotas.admit("cid", "r3", "reply-c", 0)


async def test_daily_budget_reserves_then_reconciles(make: Make, fake: FakeTime) -> None:
    quotas = make(QuotaConfig(room_daily_tokens=1000))
    grant = await quotas.admit("ann", "r1", "reply-1", 600)
    assert (grant.reserved_tokens, grant.day) == (600, "2030-03-04")
    assert await quotas.used_today("r1") == 600
    refusal = await refused(quotas, "bob", "r1", 500)
    assert (refusal.code, refusal.reason) == (BUDGET_EXCEEDED, "daily_tokens")
    assert refusal.retry_after == pytest.approx(12 * 3600, abs=0.01)  # to UTC midnight
    await answer(quotas, "bob", "r2", 500)  # other rooms have budgets of their own
    await quotas.finish(grant, 200)  # used less: the rest is refunded
    assert await quotas.used_today("r1") == 200
    await answer(quotas, "bob", "r1", 500, used=900)  # used more: the overrun is charged
    assert await quotas.used_today("r1") == 1100
    assert (await refused(quotas, "cid", "r1", 1)).reason == "daily_tokens"
    fake.advance(12 * 3600)  # midnight UTC: a new day's budget
    assert await quotas.used_today("r1") == 0
    tomorrow = await answer(quotas, "cid", "r1", 1000)
    assert tomorrow.day == "2030-03-05"
    assert await quotas.used_today("r1") == 1000


async def test_a_refusal_takes_nothing(make: Make) -> None:
    quotas = make(QuotaConfig(user_requests=2, room_requests=2, max_concurrency=1,
                              room_daily_tokens=1000))
    held = await quotas.admit("ann", "r1", "reply-1", 100)
    # Refused by the last check (concurrency), every other one passed: nothing of them taken.
    for _ in range(3):
        assert (await refused(quotas, "bob", "r2", 300)).reason == "concurrency"
    assert await quotas.used_today("r2") == 0
    await quotas.finish(held, 100)
    # bob's two requests, r2's two and its whole budget are all still there.
    await answer(quotas, "bob", "r2", 300)
    await answer(quotas, "bob", "r2", 700)
    assert await quotas.used_today("r2") == 1000
    # Refused by the budget: the user's rate is not spent either.
    assert (await refused(quotas, "cid", "r2", 1)).reason == "daily_tokens"
    await answer(quotas, "cid", "r3", 1)
    await answer(quotas, "cid", "r3", 1)


async def test_finish_is_idempotent(make: Make) -> None:
    quotas = make(QuotaConfig(max_concurrency=1, room_daily_tokens=1000))
    first = await quotas.admit("ann", "r1", "reply-1", 100)
    await quotas.finish(first, 50)
    await quotas.finish(first, 50)
    assert await quotas.used_today("r1") == 50  # refunded once
    second = await quotas.admit("ann", "r1", "reply-2", 100)
    await quotas.finish(first, 0)  # a late repeat frees nothing of the next answer's
    assert await quotas.used_today("r1") == 150
    assert (await refused(quotas, "bob", "r2")).reason == "concurrency"
    assert (await refused(quotas, "ann", "r1")).reason == "in_flight"
    await quotas.finish(second, 100)


async def test_the_slots_of_a_dead_instance_expire_with_their_lease(
        make: Make, fake: FakeTime) -> None:
    config = QuotaConfig(max_concurrency=1, room_daily_tokens=1000)
    dead, alive = make(config, lease_s=5), make(config, lease_s=5)
    lost = await dead.admit("ann", "r1", "reply-1", 100)  # its instance dies mid-answer
    fake.advance(4.9)
    assert (await refused(alive, "ann", "r1")).reason == "in_flight"
    assert (await refused(alive, "bob", "r2")).reason == "concurrency"
    fake.advance(0.2)
    grant = await alive.admit("ann", "r1", "reply-2", 100)
    # Its estimate stays charged; a finish arriving after its lease changes nothing.
    await dead.finish(lost, 0)
    assert await alive.used_today("r1") == 200
    assert (await refused(alive, "ann", "r1")).reason == "in_flight"
    await alive.finish(grant, 100)


async def test_concurrent_admits_never_exceed_the_cap(make: Make) -> None:
    config = QuotaConfig(max_concurrency=3, room_daily_tokens=0)
    instances = [make(config), make(config)]
    outcomes = await asyncio.gather(
        *(instances[n % 2].admit(f"user-{n}", f"room-{n}", f"reply-{n}", 0)
          for n in range(20)), return_exceptions=True)
    grants = [o for o in outcomes if isinstance(o, Grant)]
    refusals = [o for o in outcomes if isinstance(o, QuotaRefused)]
    assert len(grants) == 3
    assert len(refusals) == 17
    assert {r.reason for r in refusals} == {"concurrency"}
    for grant in grants:
        await instances[0].finish(grant, 0)


async def test_concurrent_admits_of_one_user_in_one_room_admit_one(make: Make) -> None:
    quotas = make(ROOMY)
    outcomes = await asyncio.gather(
        *(quotas.admit("ann", "r1", f"reply-{n}", 0) for n in range(20)),
        return_exceptions=True)
    assert sum(isinstance(o, Grant) for o in outcomes) == 1
    assert sum(getattr(o, "reason", None) == "in_flight" for o in outcomes) == 19


async def test_redis_instances_share_every_limit(redis: Redis, prefix: str) -> None:
    config = QuotaConfig(user_requests=2, room_requests=3, max_concurrency=2,
                         room_daily_tokens=1000)
    one, two = (RedisQuotas(redis, config, prefix=prefix) for _ in range(2))
    a = await one.admit("ann", "r1", "reply-1", 400)
    assert (await refused(two, "ann", "r1")).reason == "in_flight"
    assert (await refused(two, "bob", "r1", 700)).reason == "daily_tokens"
    b = await two.admit("bob", "r1", "reply-2", 100)
    assert (await refused(one, "cid", "r2")).reason == "concurrency"
    assert await two.used_today("r1") == 500
    await two.finish(a, 300)  # finished by the other instance: the state is shared
    await one.finish(b, 100)
    assert await one.used_today("r1") == 400
    await answer(two, "ann", "r2")
    assert (await refused(one, "ann", "r3")).reason == "user_rate"
    await answer(one, "cid", "r1")
    assert (await refused(two, "dan", "r1")).reason == "room_rate"


async def test_redis_leases_expire_on_the_real_clock(redis: Redis, prefix: str) -> None:
    config = QuotaConfig(max_concurrency=1, room_daily_tokens=0)
    dead = RedisQuotas(redis, config, prefix=prefix, lease_s=0.3)
    alive = RedisQuotas(redis, config, prefix=prefix, lease_s=0.3)
    await dead.admit("ann", "r1", "reply-1", 0)
    assert (await refused(alive, "bob", "r2")).reason == "concurrency"
    await asyncio.sleep(0.4)
    await alive.finish(await alive.admit("ann", "r1", "reply-2", 0), 0)


async def test_a_cancelled_redis_admit_holds_nothing(redis: Redis, prefix: str) -> None:
    config = QuotaConfig(max_concurrency=1, room_daily_tokens=1000)
    quotas = RedisQuotas(redis, config, prefix=prefix)
    for steps in range(5):  # cancelled before the script runs, or while: all the same
        admit = asyncio.create_task(quotas.admit("ann", "r1", uuid.uuid4().hex, 100))
        for _ in range(steps):
            await asyncio.sleep(0)
        admit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await admit
        await quotas.aclose()  # waits for the release
        assert quotas.sizes() == {"assistant.releases": 0}
        assert await quotas.used_today("r1") == 0
    await answer(quotas, "ann", "r1", 100)


async def test_memory_maps_drain_when_users_and_rooms_go_idle(fake: FakeTime) -> None:
    config = QuotaConfig(user_period_s=60, room_period_s=120)
    quotas = MemoryQuotas(config, clock=fake.clock, wall=fake.wall)
    held = [await quotas.admit(f"user-{n}", f"room-{n}", f"reply-{n}", 10) for n in range(4)]
    for n, grant in enumerate(held):
        await quotas.finish(grant, n)
    await answer(quotas, "user-0", "room-9", 10)
    assert quotas.sizes() == {"assistant.user_rates": 4, "assistant.room_rates": 5,
                              "assistant.held": 0, "assistant.room_tokens": 4}
    fake.advance(60)
    assert quotas.sizes()["assistant.user_rates"] == 0
    assert quotas.sizes()["assistant.room_rates"] == 5
    fake.advance(60)
    assert quotas.sizes()["assistant.room_rates"] == 0
    fake.advance(12 * 3600)  # the day's token counts go at UTC midnight
    assert set(quotas.sizes().values()) == {0}


async def test_memory_leases_of_unfinished_answers_drain(fake: FakeTime) -> None:
    quotas = MemoryQuotas(ROOMY, lease_s=5, clock=fake.clock, wall=fake.wall)
    for n in range(10):
        await quotas.admit(f"user-{n}", "r1", f"reply-{n}", 0)
    assert quotas.sizes()["assistant.held"] == 10
    fake.advance(5)
    assert quotas.sizes()["assistant.held"] == 0


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        QuotaConfig(max_concurrency=0)
    with pytest.raises(ValueError):
        QuotaConfig(user_period_s=0)

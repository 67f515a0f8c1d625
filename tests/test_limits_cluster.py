"""With REDIS_URL the rate budget and the socket count are one per user across instances:
two `python -m app` processes, a private redis-server and the embedded graph
(tests/processes.py). While Redis is down, operations are served, not refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import SECRET, people_at
from tests.personas import People, Persona
from tests.processes import Cluster, running_cluster
from tests.wsclient import WSClient, bearer, connect

BUDGET = 10
ME = "{ me { id } }"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET, "RATE_LIMIT_REQUESTS": str(BUDGET),
           "RATE_LIMIT_PERIOD": "60", "WS_MAX_CONNECTIONS": "2"}
    with running_cluster(tmp_path_factory.mktemp("limits"), env=env) as running:
        yield running


@pytest.fixture
async def people(cluster: Cluster, tmp_path: Path) -> AsyncIterator[People]:
    async with people_at(cluster.services["a"].url, tmp_path) as crowd:
        yield crowd


async def status(persona: Persona) -> int:
    response = await persona.client.post("/graphql", json={"query": ME}, headers={
        "authorization": f"Bearer {persona.token}"})
    return response.status_code


async def test_one_budget_per_user_across_instances(cluster: Cluster, people: People) -> None:
    a = people.make_user("doctor")
    b = people.at(a, cluster.services["b"].url)
    assert [await status(a) for _ in range(6)] == [200] * 6
    assert [await status(b) for _ in range(4)] == [200] * 4
    assert await status(a) == 429
    assert await status(b) == 429
    other = people.at(people.make_user("doctor"), cluster.services["b"].url)
    assert await status(other) == 200


async def test_sockets_per_user_across_instances(cluster: Cluster, people: People) -> None:
    doctor = people.make_user("doctor")
    a, b = cluster.services["a"].ws_url, cluster.services["b"].ws_url
    first = await connect(a, doctor.token)
    second = await connect(b, doctor.token)
    try:
        third = await WSClient.open(a)
        await third.init(bearer(doctor.token), ack=False)
        await third.expect_close(4430)
        await second.close()
        for _ in range(50):  # B removes its entry once it has seen the socket close
            again = await WSClient.open(a)
            await again.init(bearer(doctor.token), ack=False)
            await asyncio.sleep(0.1)
            acked = any(m.get("type") == "connection_ack" for m in again.log)
            await again.close()
            if acked:
                break
        else:
            raise AssertionError("the socket closed on B still counts")
    finally:
        await first.close()


async def test_served_while_redis_is_down(cluster: Cluster, people: People) -> None:
    doctor = people.make_user("doctor")
    assert cluster.redis is not None
    cluster.redis.kill()
    try:
        assert [await status(doctor) for _ in range(BUDGET + 2)] == [200] * (BUDGET + 2)
        async with await connect(cluster.services["a"].ws_url, doctor.token):
            pass  # admitted although the count cannot be read
    finally:
        cluster.redis.start()

"""Persisted queries shared through a real Redis (REDIS_URL): a document registered on one
instance runs by hash on another, keys expire (PERSISTED_QUERIES_TTL), and a Redis outage
only costs clients their retry with the full document."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from redis import Redis

from tests.conftest import serving
from tests.harness import LiveServer
from tests.personas import People
from tests.processes import RedisServer
from transport.document_store import KEY_PREFIX

TTL = 600
DOCUMENT = "query Shared { me { id } }"
DIGEST = hashlib.sha256(DOCUMENT.encode()).hexdigest()
HASH_ONLY = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": DIGEST}}}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("pq-redis") / "redis.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory,
         redis_server: RedisServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    settings = {"redis_url": redis_server.url, "persisted_queries_ttl": TTL}
    with serving(tmp_path_factory, "pq-graph-a", **settings) as a, \
            serving(tmp_path_factory, "pq-graph-b", **settings) as b:
        yield a, b


async def call(server: LiveServer, token: str, body: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        return await client.post("/graphql", json=body,
                                 headers={"authorization": f"Bearer {token}"})


def not_found(response: httpx.Response) -> bool:
    errors = response.json().get("errors") or []
    return (response.status_code == 200 and len(errors) == 1
            and errors[0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND")


async def test_instances_share_documents_through_redis(
        pair: tuple[LiveServer, LiveServer], redis_server: RedisServer) -> None:
    a, b = pair
    people = People(a.settings, a.url)
    doctor = people.make_user("doctor")
    me = {"data": {"me": {"id": doctor.id}}}
    assert not_found(await call(b, doctor.token, HASH_ONLY))
    full = await call(a, doctor.token, {"query": DOCUMENT, **HASH_ONLY})
    assert full.json() == me
    assert (await call(b, doctor.token, HASH_ONLY)).json() == me  # registered on a

    with Redis.from_url(redis_server.url) as redis:
        assert redis.get(KEY_PREFIX + DIGEST) == DOCUMENT.encode()
        assert 0 < redis.ttl(KEY_PREFIX + DIGEST) <= TTL  # keys expire
        redis.expire(KEY_PREFIX + DIGEST, 30)
        await call(b, doctor.token, HASH_ONLY)
        assert redis.ttl(KEY_PREFIX + DIGEST) > 30  # a hit renews the TTL

    redis_server.kill()
    try:
        # The store is down: the hash alone is "not found" (the client resends the document),
        # and the document itself still runs.
        outage = await call(b, doctor.token, HASH_ONLY)
        assert not_found(outage), outage.text
        assert (await call(b, doctor.token, {"query": DOCUMENT, **HASH_ONLY})).json() == me
    finally:
        redis_server.start()
    # An empty Redis after the restart: registering works again.
    assert (await call(a, doctor.token, {"query": DOCUMENT, **HASH_ONLY})).json() == me
    assert (await call(b, doctor.token, HASH_ONLY)).json() == me
    await people.aclose()

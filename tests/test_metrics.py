"""/metrics on two real `python -m app` processes sharing one PROMETHEUS_MULTIPROC_DIR (and a
graph server and Redis, tests/processes.py): every metric moves as it should after real
operations over HTTP and WebSocket, either process answers for both (counters and histograms
summed, gauges summed over the live processes), METRICS_TOKEN guards the endpoint, and a
stopped process's gauges stop counting while its counters stay."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from tests.conftest import SECRET, people_at
from tests.gql_helpers import register
from tests.personas import People, Persona, make_room
from tests.processes import Cluster, running_cluster
from tests.rt_helpers import EVENTS
from tests.wsclient import WSClient, bearer, connect

TOKEN = "metrics-token-0123456789abcdef"
BUDGET = 40  # operations per user per minute
LIMITS = {"RATE_LIMIT_REQUESTS": str(BUDGET), "RATE_LIMIT_PERIOD": "60",
          "WS_MAX_CONNECTIONS": "3", "WS_MESSAGE_RATE": "1", "WS_MESSAGE_BURST": "10",
          "WS_MAX_SUBSCRIPTIONS": "2", "WS_MAX_MESSAGE_BYTES": "1024"}
SEND = ("mutation($room: ID!, $content: String!, $key: String) { sendMessage(roomId: $room, "
        "input: {content: $content, clientMessageId: $key}) { id } }")
NAMES = ("collab_rooms_created_total", "collab_active_users", "collab_messages_total",
         "collab_ws_connections", "collab_ws_disconnects_total",
         "collab_graphql_operations_total", "collab_graphql_duration_seconds_bucket",
         "collab_fanout_deliveries_total", "collab_db_query_seconds_bucket",
         "collab_rate_limited_total")


class Samples:
    """One scrape: sample values by name and labels (absent: 0)."""

    def __init__(self, text: str) -> None:
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.values}


async def scrape(url: str, token: str | None = TOKEN) -> Samples:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Samples(response.text)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Until `check()` is True: gauges follow a socket's server-side close, which comes a
    moment after the client's."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "metric did not settle"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("metrics")
    (tmp / "prometheus").mkdir()
    env = {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET, "METRICS_TOKEN": TOKEN,
           "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus"), **LIMITS}
    with running_cluster(tmp, env=env) as running:
        yield running


@pytest.fixture
async def people(cluster: Cluster, tmp_path: Path) -> AsyncIterator[People]:
    async with people_at(cluster.services["a"].url, tmp_path) as crowd:
        yield crowd


def urls(cluster: Cluster) -> tuple[str, str]:
    return cluster.services["a"].url, cluster.services["b"].url


async def test_the_token_guards_metrics(cluster: Cluster) -> None:
    a, _ = urls(cluster)
    async with httpx.AsyncClient(timeout=10) as client:
        for headers in ({}, {"authorization": "Bearer wrong-token-0123456789abcdef"},
                        {"authorization": f"Basic {TOKEN}"},
                        {"authorization": f"Bearer {TOKEN}x"}):
            response = await client.get(f"{a}/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "collab_" not in response.text
    names = (await scrape(a)).names()
    assert set(NAMES) <= names, set(NAMES) - names


async def test_http_operations_rooms_messages_and_the_database(cluster: Cluster,
                                                               people: People) -> None:
    a, b = urls(cluster)
    host = people.make_user("doctor")
    before = await scrape(b)  # either process answers for both
    room = (await make_room(host, visibility="PUBLIC"))["id"]
    key = uuid.uuid4().hex
    first = await host.gql(SEND, room=room, content="hello", key=key)
    again = await host.gql(SEND, room=room, content="hello", key=key)  # a replay: not new
    assert first == again
    assert (await host.post('mutation { joinRoom(id: "missing") { status } }'))["errors"]
    assert (await host.post("{ nope }"))["errors"]  # does not validate
    assert (await host.post("{"))["errors"]  # does not parse
    await host.gql("query Me { me { id } }")
    after = await scrape(a)

    def delta(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert delta("collab_rooms_created_total") == 1
    assert delta("collab_messages_total") == 1
    operations = "collab_graphql_operations_total"
    assert delta(operations, type="mutation", outcome="ok") == 3  # createRoom, 2 sendMessage
    assert delta(operations, type="mutation", outcome="error") == 1
    assert delta(operations, type="query", outcome="refused") == 1
    assert delta(operations, type="unknown", outcome="refused") == 1
    assert delta(operations, type="query", outcome="ok") == 1
    assert delta("collab_graphql_duration_seconds_count", type="mutation") == 4
    assert delta("collab_graphql_duration_seconds_count", type="query") == 2
    assert delta("collab_db_query_seconds_count", access="write") >= 3
    assert delta("collab_db_query_seconds_count", access="read") >= 1
    assert delta("collab_db_query_seconds_sum", access="write") > 0


async def test_sockets_on_both_processes_are_summed(cluster: Cluster,
                                                    people: People) -> None:
    a, b = urls(cluster)
    ws_a, ws_b = cluster.services["a"].ws_url, cluster.services["b"].ws_url
    host, alice, bob = (people.make_user(role) for role in ("doctor", "student", "teacher"))
    await register(alice, bob)  # invitees must exist
    room = (await make_room(host, visibility="PRIVATE", invite=[alice, bob]))["id"]
    before = await scrape(a)
    sockets = [await connect(ws_a, alice.token), await connect(ws_a, alice.token),
               await connect(ws_b, bob.token)]
    try:
        for url in (a, b):  # alice twice on A, bob on B: 3 sockets, 2 users
            now = await scrape(url)
            assert now("collab_ws_connections") - before("collab_ws_connections") == 3
            assert now("collab_active_users") - before("collab_active_users") == 2
        await sockets[0].subscribe("me", "query Me { me { id } }")
        assert (await sockets[0].next_message(id="me"))["type"] == "next"
        await sockets[0].subscribe("events", EVENTS, {"room": room})
        # Attached once its own arrival is announced: then no message can slip past it.
        await sockets[0].until("events", lambda e: e["__typename"] == "PresenceChanged")
        await host.gql(SEND, room=room, content="to everyone", key=None)
        await sockets[0].until("events", lambda e: e["__typename"] == "MessagePosted")
        received = sum(1 for m in sockets[0].log if m.get("id") == "events")
        during = await scrape(b)
    finally:
        for client in sockets:
            await client.close()

    def delta(name: str, **labels: str) -> float:
        return during(name, **labels) - before(name, **labels)

    operations = "collab_graphql_operations_total"
    assert delta(operations, type="query", outcome="ok") == 1  # over the WebSocket
    assert delta(operations, type="subscription", outcome="ok") == 1
    assert delta("collab_graphql_duration_seconds_count", type="subscription") == 1
    assert delta("collab_fanout_deliveries_total") >= received >= 1

    async def closed() -> bool:
        now = await scrape(a)
        return (now("collab_ws_connections") == before("collab_ws_connections")
                and now("collab_active_users") == before("collab_active_users")
                and now("collab_ws_disconnects_total", code="1000")
                - before("collab_ws_disconnects_total", code="1000") == 3)

    await eventually(closed)


async def test_limits_are_counted_by_kind(cluster: Cluster, people: People) -> None:
    a, _ = urls(cluster)
    ws_a = cluster.services["a"].ws_url
    before = await scrape(a)
    flooder = people.make_user("doctor")
    codes = [(await flooder.client.post("/graphql", json={"query": "{ __typename }"}, headers={
        "authorization": f"Bearer {flooder.token}"})).status_code for _ in range(BUDGET + 1)]
    assert codes == [200] * BUDGET + [429]

    host, member = people.make_user("doctor"), people.make_user("student")
    await register(member)
    room = (await make_room(host, invite=[member]))["id"]
    sockets = [await connect(ws_a, member.token) for _ in range(3)]
    try:
        fourth = await WSClient.open(ws_a)  # WS_MAX_CONNECTIONS = 3
        await fourth.init(bearer(member.token), ack=False)
        await fourth.expect_close(4430)
        for n in (1, 2, 3):  # WS_MAX_SUBSCRIPTIONS = 2: the third is refused
            await sockets[0].subscribe(f"s{n}", EVENTS, {"room": room})
        assert await sockets[0].error("s3") == ["SUBSCRIPTION_LIMIT_EXCEEDED"]
        with contextlib.suppress(ConnectionClosed):  # closed before the last ones
            for _ in range(12):  # WS_MESSAGE_BURST = 10
                await sockets[1].send({"type": "ping"})
        await sockets[1].expect_close(1008)
        await sockets[2].send_raw("x" * 2048)  # WS_MAX_MESSAGE_BYTES = 1024
        await sockets[2].expect_close(1009)
    finally:
        for client in sockets:
            await client.close()

    async def counted() -> bool:
        now = await scrape(a)
        kinds = {kind: now("collab_rate_limited_total", kind=kind)
                 - before("collab_rate_limited_total", kind=kind)
                 for kind in ("operations", "connections", "subscriptions", "messages",
                              "message_size")}
        codes = {code: now("collab_ws_disconnects_total", code=code)
                 - before("collab_ws_disconnects_total", code=code)
                 for code in ("4430", "1008", "1009")}
        return kinds == dict.fromkeys(kinds, 1.0) and codes == dict.fromkeys(codes, 1.0)

    await eventually(counted)
    after = await scrape(a)
    for kind in ("query", "subscription"):  # the 429, the third subscription
        labels = {"type": kind, "outcome": "refused"}
        assert after("collab_graphql_operations_total", **labels) - \
            before("collab_graphql_operations_total", **labels) == 1, kind


async def test_a_stopped_process_leaves_its_counters_not_its_gauges(
        cluster: Cluster, people: People) -> None:
    """Runs last: it stops B."""
    a, _ = urls(cluster)
    user: Persona = people.make_user("student")
    await user.gql("{ me { id } }")
    on_a = await connect(cluster.services["a"].ws_url, user.token)
    on_b = await connect(cluster.services["b"].ws_url, user.token)
    try:
        before = await scrape(a)
        # SIGTERM: B closes its sockets with 1012 and exits (removing its gauges' files).
        await asyncio.to_thread(cluster.services["b"].stop)
        await on_b.expect_close(1012, timeout=20)
        after = await scrape(a)
        assert after("collab_ws_connections") == before("collab_ws_connections") - 1
        assert after("collab_active_users") == before("collab_active_users") - 1
        assert after("collab_ws_disconnects_total", code="1012") == \
            before("collab_ws_disconnects_total", code="1012") + 1
        assert after("collab_rooms_created_total") == before("collab_rooms_created_total")
    finally:
        await on_a.close()
        await on_b.close()

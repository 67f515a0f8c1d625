"""Rate and connection limits at their defaults (README "Limits"), in process (no REDIS_URL:
tests/test_limits_cluster.py has the shared budget): RATE_LIMIT_REQUESTS operations per
RATE_LIMIT_PERIOD per user, HTTP and WebSocket together, sendMessage weighing 3, per address
before authentication; WS_MAX_CONNECTIONS sockets per user (4430), WS_MAX_SUBSCRIPTIONS
operations per socket, the per-socket message rate (1008)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from settings import Settings
from tests.conftest import UNLIMITED, people_of, serving
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.wsclient import Closed, WSClient, bearer, connect

DEFAULTS = {name: Settings.model_fields[name].default for name in UNLIMITED}
ME = "{ me { id } }"
SEND = ("mutation($room: ID!, $text: String!) "
        "{ sendMessage(roomId: $room, input: {content: $text}) { id } }")
EVENTS = "subscription($room: ID!) { roomEvents(roomId: $room) { cursor } }"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    assert DEFAULTS == {"rate_limit_requests": 100, "ws_max_connections": 50,
                        "ws_message_rate": 20.0, "ws_message_burst": 100}
    with serving(tmp_path_factory, "limited", **DEFAULTS) as server:
        yield server


@pytest.fixture
async def crowd(limited: LiveServer) -> AsyncIterator[People]:
    async with people_of(limited) as people:
        yield people


async def spend(persona: Persona, count: int) -> None:
    for _ in range(count):
        await persona.gql(ME)


async def post(persona: Persona | httpx.AsyncClient, query: str, *,
               token: str | None = None, accept: str = "application/json",
               **variables: Any) -> httpx.Response:
    client = persona.client if isinstance(persona, Persona) else persona
    headers = {"accept": accept}
    token = persona.token if isinstance(persona, Persona) else token
    if token:
        headers["authorization"] = f"Bearer {token}"
    return await client.post("/graphql", json={"query": query, "variables": variables},
                             headers=headers)


def assert_limited(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": retry_after}
    return retry_after


async def test_a_hundred_operations_a_minute_per_user(limited: LiveServer,
                                                      crowd: People) -> None:
    doctor, other = crowd.make_user("doctor"), crowd.make_user("doctor")
    await spend(doctor, 100)
    before = limited.query_count()
    assert_limited(await post(doctor, ME))
    assert_limited(await post(doctor, ME, accept="application/graphql-response+json"))
    assert limited.query_count() == before, "a refused operation ran Cypher"
    # Per user, not per address: the other user (same address) is not affected.
    assert (await post(other, ME)).status_code == 200


async def test_websocket_operations_take_from_the_same_budget(limited: LiveServer,
                                                              crowd: People) -> None:
    host = crowd.make_user("doctor")
    room = await make_room(host)  # 1
    await spend(host, 96)  # 97
    async with await connect(limited.ws_url, host.token) as ws:  # not an operation
        await ws.subscribe("events", EVENTS, {"room": room["id"]})  # 98
        for n in range(2):  # 100
            await ws.subscribe(f"q{n}", ME)
            assert (await ws.next_message(id=f"q{n}"))["type"] == "next"
        await ws.subscribe("over", ME)
        assert await ws.error("over") == ["RATE_LIMITED"]
        await ws.subscribe("events2", EVENTS, {"room": room["id"]})
        assert await ws.error("events2") == ["RATE_LIMITED"]
        # The subscription that was open stays open.
        assert not [m for m in ws.log if m.get("id") == "events" and m["type"] != "next"]
    assert_limited(await post(host, ME))


async def test_sending_a_message_weighs_three(crowd: People) -> None:
    host = crowd.make_user("doctor")
    room = await make_room(host)  # 1
    for n in range(32):  # 97
        await host.gql(SEND, room=room["id"], text=f"m{n}")
    await spend(host, 2)  # 99: one left
    assert_limited(await post(host, SEND, room=room["id"], text="one too many"))
    assert (await post(host, ME)).status_code == 200  # a query still fits


async def test_before_authentication_per_address(limited: LiveServer, crowd: People) -> None:
    doctor = crowd.make_user("doctor")
    async with httpx.AsyncClient(base_url=limited.url, timeout=30) as anonymous:
        for _ in range(99):
            assert (await post(anonymous, "{ __typename }")).status_code == 200
        # A token that does not verify counts for the address too.
        bad = await post(anonymous, ME, token="not-a-jwt")
        assert bad.status_code == 200 and bad.json()["errors"][0]["extensions"]["code"] == \
            "UNAUTHENTICATED"
        assert_limited(await post(anonymous, "{ __typename }"))
    assert (await post(doctor, ME)).status_code == 200  # signed in: a budget of their own


# -- sockets --------------------------------------------------------------------------------


async def refused_before_ack(url: str, token: str) -> WSClient:
    client = await WSClient.open(url)
    await client.init(bearer(token), ack=False)
    await client.expect_close(4430)
    assert not client.log, "acknowledged before being refused"
    return client


async def test_fifty_sockets_per_user(limited: LiveServer, crowd: People) -> None:
    doctor, other = crowd.make_user("doctor"), crowd.make_user("doctor")
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(await connect(limited.ws_url, doctor.token))
                   for _ in range(50)]
        await refused_before_ack(limited.ws_url, doctor.token)
        async with await connect(limited.ws_url, other.token):
            pass  # someone else's sockets do not count
        await sockets.pop().close()
        for _ in range(50):  # released once the server has seen it close
            client = await WSClient.open(limited.ws_url)
            await client.init(bearer(doctor.token), ack=False)
            reply = await _ack_or_close(client)
            await client.close()
            if reply == "ack":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("a closed socket's place was never freed")


async def _ack_or_close(client: WSClient) -> str:
    try:
        message = await client.next_message(5)
    except Closed as closed:
        assert closed.code == 4430
        return "closed"
    assert message["type"] == "connection_ack"
    return "ack"


async def test_a_socket_sending_in_a_loop_is_closed_with_1008(limited: LiveServer,
                                                             crowd: People) -> None:
    doctor = crowd.make_user("doctor")
    async with await connect(limited.ws_url, doctor.token) as ws:
        for _ in range(80):  # a burst within WS_MESSAGE_BURST is fine
            await ws.send({"type": "ping"})
        for _ in range(80):
            assert (await ws.next_message())["type"] == "pong"
    async with await connect(limited.ws_url, doctor.token) as ws:
        with contextlib.suppress(Exception):  # the server may close while we still send
            for _ in range(2000):
                await ws.send({"type": "ping"})
        await ws.expect_close(1008, timeout=10)
        assert len(ws.log) < 2000


async def test_a_hundred_operations_per_socket(live: LiveServer, people: People) -> None:
    """The roomEvents handler serves its own subscriptions (transport/ws.py): the cap holds
    for them as for the operations strawberry runs (a socket once took 2,000)."""
    host = people.make_user("doctor")
    room = await make_room(host)
    async with await connect(live.ws_url, host.token) as ws:
        for n in range(100):
            await ws.subscribe(f"e{n}", EVENTS, {"room": room["id"]})
        await ws.subscribe("e100", EVENTS, {"room": room["id"]})
        assert await ws.error("e100") == ["SUBSCRIPTION_LIMIT_EXCEEDED"]
        await ws.subscribe("q", ME)
        assert await ws.error("q") == ["SUBSCRIPTION_LIMIT_EXCEEDED"]
        await ws.complete("e0")
        await asyncio.sleep(0.2)
        await ws.subscribe("q2", ME)
        reply = await ws.next_message(id="q2")
        assert reply["type"] == "next" and reply["payload"]["data"]["me"]["id"] == host.id

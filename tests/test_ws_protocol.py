"""The WebSocket transport: every graphql-transport-ws close code, tokens that expire while
connected, the legacy subprotocol, browser Origins, and slow consumers (closed with 1013
while the rest of the room keeps receiving everything in order)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from websockets.exceptions import InvalidStatus

from auth.tokens import Role
from tests.conftest import make_settings as settings_for
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.rt_helpers import EVENTS, EVENTS_SLIM, attached, head_seq, send
from tests.wsclient import WSClient, bearer, connect, seq_of

ALLOWED = "https://app.example"


async def opened(live: LiveServer, **options: Any) -> WSClient:
    return await WSClient.open(live.ws_url, **options)


async def room_with_member(people: People) -> tuple[Persona, Persona, str]:
    host, member = people.make_user("doctor"), people.make_user("student")
    await register(host, member)
    room = await make_room(host, invite=[member])
    return host, member, room["id"]


@pytest.mark.parametrize("frame", [
    "{not json", '"a string"', "[1, 2]", "null", '{"type": "bogus"}', '{"payload": {}}',
    '{"type": "subscribe", "id": "1"}', '{"type": "subscribe", "id": "1", "payload": "x"}',
    '{"type": "subscribe", "id": "1", "payload": {"query": 5}}',
    '{"type": "subscribe", "id": "1", "payload": {"query": "{ me { id } }", "variables": 5}}',
    '{"type": "subscribe", "payload": {"query": "subscription { __typename }"}}',
])
async def test_invalid_messages_close_with_4400(fresh: LiveServer, people: People,
                                                frame: str) -> None:
    user = people.make_user("doctor")
    client = await connect(fresh.ws_url, user.token)
    await client.send_raw(frame)
    assert await client.expect_close(4400) == []


async def test_bad_connection_init_payload_and_binary_frames_close_with_4400(
        fresh: LiveServer) -> None:
    client = await opened(fresh)
    await client.send({"type": "connection_init", "payload": "Bearer x"})
    await client.expect_close(4400)
    client = await opened(fresh)
    await client.ws.send(b'{"type": "connection_init"}')
    await client.expect_close(4400)


async def test_subscribe_before_the_ack_closes_with_4401(fresh: LiveServer,
                                                         people: People) -> None:
    _, _, rid = await room_with_member(people)
    for query in (EVENTS, "subscription { __typename }"):
        client = await opened(fresh)
        await client.subscribe("1", query, {"room": rid})
        assert await client.expect_close(4401) == []


def unsigned_token() -> str:
    """`alg: none`: a token anyone can write."""
    def seg(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    claims = {"sub": "admin-1", "name": "Eve", "role": "admin", "exp": int(time.time()) + 600}
    return f"{seg({'alg': 'none', 'typ': 'JWT'})}.{seg(claims)}."


@pytest.mark.parametrize("payload", [
    None, {}, {"authorization": "Bearer not-a-jwt"}, {"authorization": "Basic dXNlcjpwdw=="},
    {"authorization": 42}, {"authToken": 42}, {"authToken": "nope"},
    {"authorization": f"Bearer {unsigned_token()}"}, "wrong-secret", "expired",
])
async def test_bad_or_missing_tokens_close_with_4403(fresh: LiveServer, people: People,
                                                     payload: Any) -> None:
    if payload == "wrong-secret":
        other = settings_for(fresh.settings.graph_data_dir,
                             jwt_secret_key="another-secret-0123456789abcdef")
        token = People(other, fresh.url).token_for("doctor-x", "X", Role.DOCTOR)
        payload = bearer(token)
    elif payload == "expired":
        past = int(time.time()) - 600  # well beyond the verifier's leeway
        claims = {"sub": "doctor-y", "name": "Y", "role": "doctor", "iat": past - 60,
                  "exp": past}
        key = OctKey.import_key(fresh.settings.jwt_secret_key)
        payload = bearer(jwt.encode({"alg": "HS256"}, claims, key, algorithms=["HS256"]))
    client = await opened(fresh)
    await client.init(payload, ack=False)
    assert await client.expect_close(4403) == []


async def test_a_token_expiring_while_connected_closes_with_4403(fresh: LiveServer,
                                                                 people: People) -> None:
    host, member, rid = await room_with_member(people)
    # exp is in whole seconds: this one ends 2 to 3 s from now.
    token = people.token_for(member.id, member.name, member.role, ttl=timedelta(seconds=3))
    client = await connect(fresh.ws_url, token)
    connected = time.monotonic()
    await client.subscribe("s", EVENTS, {"room": rid})
    await attached(fresh, rid, 1)
    posted = await send(host, rid, "still valid")
    (event,) = await client.durable("s", 1)
    assert event["message"]["id"] == posted["id"]
    # Each open operation learns why first (graphql-ws clients retry a bare 4403 silently).
    assert await client.error("s", timeout=6) == ["UNAUTHENTICATED"]
    await client.expect_close(4403, timeout=3)
    assert 1.5 <= time.monotonic() - connected <= 4.5
    await attached(fresh, rid, 0)


async def test_no_connection_init_closes_with_4408(fresh: LiveServer) -> None:
    client = await opened(fresh)
    started = time.monotonic()
    assert await client.expect_close(4408, timeout=14) == []
    assert 9.0 <= time.monotonic() - started <= 14.0


async def test_a_duplicate_operation_id_closes_with_4409(fresh: LiveServer,
                                                         people: People) -> None:
    _, member, rid = await room_with_member(people)
    client = await connect(fresh.ws_url, member.token)
    await client.subscribe("x", EVENTS, {"room": rid})
    await attached(fresh, rid, 1)
    await client.complete("x")  # completed ids may be reused
    await attached(fresh, rid, 0)
    await client.subscribe("x", EVENTS_SLIM, {"room": rid})
    await attached(fresh, rid, 1)
    await client.quiet(0.2)
    await client.subscribe("x", EVENTS, {"room": rid})
    await client.expect_close(4409)
    await attached(fresh, rid, 0)


async def test_a_second_connection_init_closes_with_4429(fresh: LiveServer,
                                                         people: People) -> None:
    user = people.make_user("doctor")
    client = await connect(fresh.ws_url, user.token)
    await client.init(bearer(user.token), ack=False)
    assert await client.expect_close(4429) == []


async def test_the_legacy_graphql_ws_subprotocol_is_refused(fresh: LiveServer) -> None:
    client = await opened(fresh, subprotocols=("graphql-ws",))
    assert client.ws.subprotocol is None  # not chosen, and the socket is closed at once
    assert await client.expect_close(4406) == []


@pytest.fixture(scope="module")
def browser_facing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(settings_for(tmp_path_factory.mktemp("cors"),
                                     cors_origins=[ALLOWED])).start()
    yield server
    server.stop()


@pytest.fixture
async def visitors(browser_facing: LiveServer) -> AsyncIterator[People]:
    crowd = People(browser_facing.settings, browser_facing.url)
    yield crowd
    await crowd.aclose()


async def test_browser_origins(fresh: LiveServer, browser_facing: LiveServer,
                               visitors: People) -> None:
    user = visitors.make_user("doctor")
    for server, origin in ((browser_facing, "https://evil.example"),
                           (browser_facing, "http://app.example"),
                           (fresh, ALLOWED)):
        with pytest.raises(InvalidStatus) as refused:
            await opened(server, origin=origin)
        assert refused.value.response.status_code == 403, origin
    for origin in (ALLOWED, None):  # None: not a browser
        client = await connect(browser_facing.ws_url, user.token, origin=origin)
        await client.send({"type": "ping"})
        assert (await client.next_message())["type"] == "pong"
        await client.close()


async def test_a_slow_consumer_is_closed_with_1013_and_the_room_goes_on(
        fresh: LiveServer, people: People) -> None:
    host, member = people.make_user("doctor"), people.make_user("student")
    posters = [people.make_user("doctor") for _ in range(4)]
    await register(host, member, *posters)
    rid = (await make_room(host, invite=[member, *posters]))["id"]
    fast = await connect(fresh.ws_url, host.token)
    # A tiny receive buffer and library queue: once it stops reading, the server backs up.
    slow = await connect(fresh.ws_url, member.token, rcvbuf=4096, max_queue=1)
    await fast.subscribe("f", EVENTS, {"room": rid})
    ops = [f"s{n}" for n in range(5)]  # each event is a frame (of ~9 KB) per operation
    for op in ops:
        await slow.subscribe(op, EVENTS, {"room": rid})
    await attached(fresh, rid, 1 + len(ops))
    slow.pause()

    started = time.monotonic()
    count, body = 300, "x" * 9000
    head = head_seq(fresh, rid)

    async def post(who: Persona, n: int) -> None:
        for i in range(n):
            await send(who, rid, f"{i} {body}")

    await asyncio.gather(*(post(p, count // len(posters)) for p in posters))
    events = await fast.durable("f", count, timeout=20)
    assert [seq_of(e["cursor"]) for e in events] == list(range(head + 1, head + count + 1))
    assert [e["message"]["seq"] for e in events] == list(range(head + 1, head + count + 1))

    # The server lets go of the stalled socket by itself: no subscription left, no reading
    # needed (the close frame waits ABORT_AFTER_S for room in the socket, then it is cut).
    await attached(fresh, rid, 1, timeout=15)
    slow.resume()
    await slow.expect_close({1013, 1006}, timeout=10)
    delivered = [m for m in slow.log if m["type"] == "next"
                 and m["payload"]["data"]["roomEvents"]["__typename"] == "MessagePosted"]
    assert len(delivered) < count * len(ops), "the slow consumer was never cut off"
    for op in ops:  # what did arrive is an in-order prefix
        got = [seq_of(m["payload"]["data"]["roomEvents"]["cursor"])
               for m in delivered if m["id"] == op]
        assert got == list(range(head + 1, head + 1 + len(got)))
    await attached(fresh, rid, 1)
    await fast.quiet(0.2)
    await fast.close()
    assert time.monotonic() - started < 30

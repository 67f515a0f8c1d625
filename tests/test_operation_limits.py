"""Operation limits (README "Limits") against the live service: each over-limit document is
refused with its own code, no `data`, and before any Cypher runs (the query count stays put),
on every path: HTTP POST and GET, a persisted-query hash, WebSocket subscribe for roomEvents
and for other operations. Fragments count (the alias-limit bypass through fragments is
closed). Request bodies over 2 MiB are refused without being read; WebSocket messages over
1 MiB close the socket with 1009."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from graphql import GraphQLSyntaxError
from graphql.validation.rules import overlapping_fields_can_be_merged as _overlap

from schema import build_schema
from settings import load_settings
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.wsclient import connect
from transport.documents import DocumentCache
from transport.limits import (
    VALIDATION_WORK,
    OperationLimits,
    TokenLimitExceeded,
    parse_limited,
)
from transport.persisted import sha256_hex

GRAPHQL_RESPONSE = "application/graphql-response+json"


def parents(levels: int) -> str:
    """`message(id:)` with `parent` nested `levels` times: depth levels + 2."""
    inner = "id"
    for _ in range(levels):
        inner = f"parent {{ {inner} }}"
    return f'{{ message(id: "x") {{ {inner} }} }}'


def aliases(count: int, *, prefix: str = "a") -> str:
    return " ".join(f"{prefix}{n}: __typename" for n in range(count))


DEEP = parents(13)  # 15 levels: message, 13 x parent, id
ALIASED = "{ " + aliases(500) + " }"
DIRECTED = "{ me { id " + "@include(if: true) " * 60 + "} }"
# rooms 2 + 100 x (edge 2 + node 2 + messages 2 + 10 x (edge 2 + node 2 + id 1 + content 1))
COSTLY = ("{ rooms(first: 100) { edges { node { messages(last: 10) { edges { node { id content } "
          "} } } } } }")
COSTLY_COST = 2 + 100 * (2 + 2 + 2 + 10 * 6)
HUGE = "{ me { " + "displayName " * (1024 * 1024 // 12) + "} }"  # 1 MB

OVER_LIMITS = {
    "depth": (DEEP, "DEPTH_LIMIT_EXCEEDED", {"depth": 15, "maxDepth": 10}),
    "aliases": (ALIASED, "ALIAS_LIMIT_EXCEEDED", {"aliases": 500, "maxAliases": 15}),
    "directives": (DIRECTED, "DIRECTIVE_LIMIT_EXCEEDED", {"directives": 60,
                                                          "maxDirectives": 50}),
    "cost": (COSTLY, "COST_LIMIT_EXCEEDED", {"cost": COSTLY_COST, "maxCost": 5000}),
    "tokens": (HUGE, "TOKEN_LIMIT_EXCEEDED", {"maxTokens": 2000}),
}


async def post(persona: Persona, body: dict[str, Any], accept: str = GRAPHQL_RESPONSE
               ) -> httpx.Response:
    return await persona.client.post("/graphql", json=body, headers={
        "authorization": f"Bearer {persona.token}", "accept": accept})


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    return error


def test_the_costly_document_costs_what_the_readme_rules_say() -> None:
    assert COSTLY_COST == 6602
    assert OperationLimits().max_cost < COSTLY_COST


@pytest.mark.parametrize("name", sorted(OVER_LIMITS))
async def test_over_a_limit_over_http_no_data_no_cypher(live: LiveServer, people: People,
                                                       name: str) -> None:
    query, code, extensions = OVER_LIMITS[name]
    doctor = people.make_user("doctor")
    await doctor.gql("{ me { id } }")
    before = live.query_count()
    response = await post(doctor, {"query": query})
    assert response.status_code == 400, response.text
    body = response.json()
    assert "data" not in body
    error = only_error(body)
    assert error["extensions"] == {"code": code, **extensions}, error
    # application/json: 200 with `data: null`, as for every request error
    legacy = await post(doctor, {"query": query}, accept="application/json")
    assert legacy.status_code == 200
    assert legacy.json()["data"] is None
    assert only_error(legacy.json())["extensions"]["code"] == code
    assert live.query_count() == before, "Cypher ran for a refused document"


async def test_over_a_limit_over_get(live: LiveServer, people: People) -> None:
    doctor = people.make_user("doctor")
    await doctor.gql("{ me { id } }")
    before = live.query_count()
    response = await doctor.client.get("/graphql", params={"query": ALIASED}, headers={
        "authorization": f"Bearer {doctor.token}", "accept": GRAPHQL_RESPONSE})
    assert response.status_code == 400
    assert only_error(response.json())["extensions"]["code"] == "ALIAS_LIMIT_EXCEEDED"
    assert live.query_count() == before


async def test_within_the_limits_it_runs(people: People) -> None:
    doctor = people.make_user("doctor")
    data = await doctor.gql("{ " + aliases(15) + " }")
    assert len(data) == 15
    assert "message" in await doctor.gql(parents(8))  # depth 10
    assert "me" in await doctor.gql("{ me { " + "id @include(if: true) " * 50 + "} }")


# -- fragments ------------------------------------------------------------------------------


async def test_aliases_in_fragments_count(people: People) -> None:
    doctor = people.make_user("doctor")
    # All 16 aliases in a fragment (strawberry's MaxAliasesLimiter once missed these).
    hidden = "query { ...F } fragment F on Query { " + aliases(16) + " }"
    error = await doctor.post(hidden)
    assert only_error(error)["extensions"] == {"code": "ALIAS_LIMIT_EXCEEDED", "aliases": 16,
                                               "maxAliases": 15}
    # A fragment counts at every spread: 8 aliases spread twice (through another fragment).
    twice = ("query { ...B ...C } fragment C on Query { ...B } "
             "fragment B on Query { " + aliases(8, prefix="b") + " }")
    assert only_error(await doctor.post(twice))["extensions"]["aliases"] == 16
    within = twice.replace(aliases(8, prefix="b"), aliases(7, prefix="b"))
    assert len(await doctor.gql(within)) == 7


async def test_depth_and_directives_in_fragments_count(people: People) -> None:
    doctor = people.make_user("doctor")
    deep = ('{ message(id: "x") { ...P } } fragment P on Message { parent { parent { parent '
            '{ parent { parent { parent { parent { parent { parent { parent { id } } } } } } } '
            '} } } }')
    assert only_error(await doctor.post(deep))["extensions"]["code"] == "DEPTH_LIMIT_EXCEEDED"
    directed = ("{ me { ...U ...U2 } } fragment U on User { id " + "@include(if: true) " * 30
                + "} fragment U2 on User { ...U }")
    assert only_error(await doctor.post(directed))["extensions"] == {
        "code": "DIRECTIVE_LIMIT_EXCEEDED", "directives": 60, "maxDirectives": 50}


async def test_fragment_cycles_are_refused_not_followed(people: People) -> None:
    doctor = people.make_user("doctor")
    body = await doctor.post("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }")
    assert {e["extensions"]["code"] for e in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}


# -- cost -------------------------------------------------------------------------------------

PAGED = """query($n: Int) {
  rooms(first: $n) { edges { node { messages(last: 50) { edges { node { id content } } } } } }
}"""


def paged_cost(n: int) -> int:  # rooms 2 + n x (edge 2 + node 2 + messages 2 + 50 x 6)
    return 2 + n * (2 + 2 + 2 + 50 * 6)


async def test_cost_counts_the_pages_the_variables_ask_for(live: LiveServer,
                                                           people: People) -> None:
    doctor = people.make_user("doctor")
    assert paged_cost(16) <= 5000 < paged_cost(17)
    assert "rooms" in await doctor.gql(PAGED, n=16)
    await doctor.gql("{ me { id } }")
    before = live.query_count()
    refused = only_error(await doctor.post(PAGED, {"n": 17}))
    assert refused["extensions"] == {"code": "COST_LIMIT_EXCEEDED", "cost": paged_cost(17),
                                     "maxCost": 5000}
    # Not given: the argument's default (first: 20).
    defaulted = only_error(await doctor.post(PAGED))
    assert defaulted["extensions"]["cost"] == paged_cost(20)
    assert live.query_count() == before


async def test_a_persisted_hash_is_held_to_the_limits(live: LiveServer, people: People) -> None:
    doctor = people.make_user("doctor")
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(PAGED)}}
    registered = await post(doctor, {"query": PAGED, "variables": {"n": 1},
                                     "extensions": extensions})
    assert registered.status_code == 200 and "rooms" in registered.json()["data"]
    before = live.query_count()
    by_hash = await doctor.client.get("/graphql", params={
        "variables": json.dumps({"n": 17}), "extensions": json.dumps(extensions)},
        headers={"authorization": f"Bearer {doctor.token}", "accept": GRAPHQL_RESPONSE})
    assert by_hash.status_code == 400
    assert only_error(by_hash.json())["extensions"]["cost"] == paged_cost(17)
    assert live.query_count() == before


# -- the WebSocket ----------------------------------------------------------------------------

EVENTS_DEEP = ('subscription($room: ID!) { roomEvents(roomId: $room) { ... on MessagePosted '
               '{ message { parent { parent { parent { parent { parent { parent { parent { '
               'parent { parent { id } } } } } } } } } } } } }')
EVENTS_ALIASED = ("subscription($room: ID!) { roomEvents(roomId: $room) { ...F } } "
                  "fragment F on RoomEvent { " + " ".join(f"c{n}: cursor" for n in range(16))
                  + " }")


async def test_over_a_limit_over_the_websocket(live: LiveServer, people: People) -> None:
    host = people.make_user("doctor")
    room = await make_room(host)
    async with await connect(live.ws_url, host.token) as ws:
        before = live.query_count()
        cases = [("deep", EVENTS_DEEP, {"room": room["id"]}, "DEPTH_LIMIT_EXCEEDED"),
                 ("aliased", EVENTS_ALIASED, {"room": room["id"]}, "ALIAS_LIMIT_EXCEEDED"),
                 ("query", ALIASED, {}, "ALIAS_LIMIT_EXCEEDED"),
                 ("costly", PAGED, {"n": 17}, "COST_LIMIT_EXCEEDED"),
                 ("huge", HUGE[:200_000], {}, "TOKEN_LIMIT_EXCEEDED")]
        for op_id, query, variables, code in cases:
            await ws.subscribe(op_id, query, variables)
            assert await ws.rejected(op_id) == [code], op_id
        assert live.query_count() == before, "Cypher ran for a refused document"
        # The socket stays open and serves what is within the limits.
        await ws.subscribe("fine", PAGED, {"n": 2})
        reply = await ws.next_message(id="fine")
        assert reply["type"] == "next" and "rooms" in reply["payload"]["data"], reply


# -- bodies and messages ----------------------------------------------------------------------


async def _raw(live: LiveServer, head: str, body: bytes | None = None
               ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(head.encode() + (body or b""))
    await writer.drain()
    return reader, writer


async def _status_and_body(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return status, json.loads(await asyncio.wait_for(reader.readexactly(length), 10))


async def test_a_declared_length_over_2_mib_is_refused_before_reading(live: LiveServer) -> None:
    head = ("POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {20 * 1024 * 1024}\r\n\r\n")
    reader, writer = await _raw(live, head, b'{"query": "{ __typename }", "x": "')
    try:  # only 34 bytes of the 20 MB were sent: the answer comes anyway
        status, body = await _status_and_body(reader)
    finally:
        writer.close()
    assert status == 413
    assert body["errors"][0]["extensions"] == {"code": "PAYLOAD_TOO_LARGE",
                                               "maxBytes": 2 * 1024 * 1024}


CHUNKED = ("POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           "transfer-encoding: chunked\r\n\r\n")


def chunk(size: int) -> bytes:
    return f"{size:x}\r\n".encode() + b"a" * size + b"\r\n"


async def test_a_streamed_body_is_refused_once_past_2_mib(live: LiveServer) -> None:
    # Just past the limit, then nothing more: the answer is a clean 413.
    reader, writer = await _raw(live, CHUNKED, b"".join(
        chunk(65536) for _ in range(2 * 1024 * 1024 // 65536)) + chunk(32768))
    try:
        status, body = await _status_and_body(reader)
    finally:
        writer.close()
    assert status == 413 and body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_streamed_body_is_not_read_to_its_end(live: LiveServer) -> None:
    """20 MB streamed: the service stops reading past 2 MiB and closes the connection (with
    data still unread, the peer sees a reset), long before the client has sent it all."""
    _, writer = await _raw(live, CHUNKED)
    sent = 0
    try:
        while sent < 20 * 1024 * 1024:
            writer.write(chunk(65536))
            await asyncio.wait_for(writer.drain(), 10)
            sent += 65536
            await asyncio.sleep(0)
    except (ConnectionError, TimeoutError):
        pass  # closed (or no longer read) by the service
    finally:
        writer.close()
    assert sent < 20 * 1024 * 1024, "the whole body was read"


async def test_a_body_just_under_2_mib_runs(people: People) -> None:
    doctor = people.make_user("doctor")
    padding = "a" * (2 * 1024 * 1024 - 200)
    response = await doctor.client.post(
        "/graphql", content=json.dumps({"query": "{ me { id } }", "padding": padding}),
        headers={"authorization": f"Bearer {doctor.token}", "content-type": "application/json"})
    assert response.status_code == 200 and response.json()["data"]["me"]["id"] == doctor.id


async def test_a_websocket_message_over_1_mib_closes_with_1009(live: LiveServer,
                                                              people: People) -> None:
    doctor = people.make_user("doctor")
    async with await connect(live.ws_url, doctor.token) as ws:
        await ws.send({"type": "ping", "payload": {"x": "a" * (1024 * 1024 - 100)}})
        assert (await ws.next_message())["type"] == "pong"  # just under: fine
        await ws.send({"type": "ping", "payload": {"x": "a" * (1024 * 1024)}})
        await ws.expect_close(1009)


# -- graphql-core, the parts read here --------------------------------------------------------


def test_graphql_cores_token_limits_are_recognised() -> None:
    """transport/limits.py tells the parser's own limits from other syntax errors by their
    message: if graphql-core words them differently, this fails (and the code would say
    GRAPHQL_PARSE_FAILED instead of TOKEN_LIMIT_EXCEEDED)."""
    limits = OperationLimits(max_tokens=100)
    for source in ("{ me { " + "id " * 200 + "} }", "#\n" * 200 + "{ me { id } }"):
        with pytest.raises(TokenLimitExceeded):
            parse_limited(source, limits)
    with pytest.raises(GraphQLSyntaxError):
        parse_limited("{ me { id }", limits)
    assert parse_limited("{ me { " + "id " * 90 + "} }", limits) is not None


def test_validation_work_is_bounded() -> None:
    """400 fields of one name (2,000 tokens, within every limit) would cost graphql-core's
    overlapping-fields rule about a second: transport/limits.py lowers its budget, and
    graphql-core must still read it (else this fails)."""
    repeated = "{ " + " ".join("me { id }" for _ in range(400)) + " }"
    documents = DocumentCache(build_schema()._schema)
    errors = documents.get(repeated, None).errors
    assert [(e.message, (e.extensions or {}).get("code")) for e in errors] == [
        ("Validation aborted.", "GRAPHQL_VALIDATION_FAILED")]
    assert _overlap.MAX_COMPLEXITY_BUDGET == VALIDATION_WORK
    assert documents.get("{ " + " ".join("me { id }" for _ in range(50)) + " }",
                         None).errors == []


@pytest.mark.parametrize(("name", "value"), [
    ("OPERATION_MAX_DEPTH", "0"), ("OPERATION_MAX_ALIASES", "-1"), ("OPERATION_MAX_TOKENS", "x"),
    ("OPERATION_MAX_COST", "0"), ("OPERATION_MAX_DIRECTIVES", "many"),
    ("REQUEST_MAX_BYTES", "10"), ("REQUEST_TIMEOUT", "0"), ("WS_MAX_MESSAGE_BYTES", "1"),
    ("WS_MAX_SUBSCRIPTIONS", "0"), ("WS_MESSAGE_RATE", "-3"), ("WS_MESSAGE_BURST", "0"),
    ("RATE_LIMIT_REQUESTS", "0"), ("RATE_LIMIT_PERIOD", "0"), ("WS_MAX_CONNECTIONS", "0"),
    ("ENABLE_INTROSPECTION", "sometimes"),
])
def test_a_bad_limit_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch, name: str,
                                              value: str) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert name in str(info.value)

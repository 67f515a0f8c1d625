"""Persisted operations over real HTTP and WebSocket: automatic persisted queries as Apollo
Client's link speaks them (POST and hash-only GET), hashes that do not match, what gets
stored and by whom, the bounded in-process store, trusted documents (PERSISTED_QUERIES_ONLY
with a manifest) on both transports, and their settings."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from settings import load_settings
from tests.conftest import people_of, serving
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import CREATE_ROOM, People, Persona, make_room
from tests.rt_helpers import SEND, attached, send
from tests.wsclient import connect
from transport.document_store import MAX_DOCUMENT_BYTES, MemoryDocumentStore

GR = "application/graphql-response+json"
JSON = "application/json"
ME = "query Me { me { id } }"
EVENTS = ("subscription Events($room: ID!) { roomEvents(roomId: $room) "
          "{ __typename ... on MessagePosted { message { content } } } }")
CUSTOM_ID = "my-custom-id-1"
TYPENAME = "query Typename { __typename }"
REGISTER = "{ me { id } }"


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def persisted(document: str | None = None, *, digest: str | None = None,
              version: Any = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version,
                               "sha256Hash": digest or sha(document or "")}}


async def post(live: LiveServer, body: dict[str, Any], who: Persona | None = None,
               accept: str = JSON) -> httpx.Response:
    headers = {"accept": accept}
    if who is not None:
        headers["authorization"] = f"Bearer {who.token}"
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        return await client.post("/graphql", json=body, headers=headers)


async def get(live: LiveServer, extensions: dict[str, Any], who: Persona | None = None,
              accept: str = JSON, **params: str) -> httpx.Response:
    """Hash-only GET, as Apollo's link sends it with useGETForHashedQueries."""
    headers = {"accept": accept}
    if who is not None:
        headers["authorization"] = f"Bearer {who.token}"
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        return await client.get("/graphql", headers=headers, params={
            "extensions": json.dumps(extensions), **params})


def codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json()["errors"]]


def assert_not_found(response: httpx.Response) -> None:
    """What Apollo's link retries on: message and code exactly, never cached."""
    assert response.status_code == 200
    (error,) = response.json()["errors"]
    assert error["message"] == "PersistedQueryNotFound"
    assert error["extensions"] == {"code": "PERSISTED_QUERY_NOT_FOUND"}
    assert response.headers["cache-control"] == "private, no-cache, must-revalidate"


# --- automatic persisted queries ----------------------------------------------------------------


@pytest.mark.parametrize("accept", [JSON, GR])
async def test_apollo_round_trip(people: People, fresh: LiveServer, accept: str) -> None:
    doctor = people.make_user("doctor")
    document = f"query Me{uuid.uuid4().hex} {{ me {{ id }} }}"  # unknown to the store
    extensions = persisted(document)
    # 1. The hash alone: unknown. 2. Again with the document: runs, and is stored.
    assert_not_found(await post(fresh, {"extensions": extensions}, doctor, accept))
    assert_not_found(await get(fresh, extensions, doctor, accept))
    full = await post(fresh, {"query": document, "extensions": extensions}, doctor, accept)
    assert full.json() == {"data": {"me": {"id": doctor.id}}}
    # 3. From now on the hash alone runs it, by POST or by GET, for anyone.
    other = people.make_user("student")
    for response in (await post(fresh, {"extensions": extensions}, other, accept),
                      await get(fresh, extensions, other, accept)):
        assert response.status_code == 200
        assert response.json() == {"data": {"me": {"id": other.id}}}


async def test_a_hash_that_is_not_the_documents_is_refused(people: People,
                                                          live: LiveServer) -> None:
    doctor = people.make_user("doctor")
    for accept in (JSON, GR):
        response = await post(live, {"query": ME, "extensions": persisted("{ other }")},
                              doctor, accept)
        assert (response.status_code, codes(response)) == (400, ["BAD_REQUEST"])
        assert response.json()["errors"][0]["message"] == "provided sha does not match query"
    assert_not_found(await post(live, {"extensions": persisted("{ other }")}, doctor))


@pytest.mark.parametrize("extensions", [
    pytest.param({"persistedQuery": "abc"}, id="not-an-object"),
    pytest.param(persisted(ME, version=2), id="version-2"),
    pytest.param(persisted(ME, version="1"), id="version-a-string"),
    pytest.param({"persistedQuery": {"version": 1}}, id="no-hash"),
    pytest.param({"persistedQuery": {"version": 1, "sha256Hash": 42}}, id="hash-a-number"),
    pytest.param(persisted(digest="not a hash!"), id="hash-with-spaces"),
])
async def test_malformed_persisted_query_extensions(live: LiveServer,
                                                   extensions: dict[str, Any]) -> None:
    response = await post(live, {"query": ME, "extensions": extensions})
    assert (response.status_code, codes(response)) == (400, ["BAD_REQUEST"])
    response = await get(live, extensions)
    assert (response.status_code, codes(response)) == (400, ["BAD_REQUEST"])


async def test_only_valid_documents_of_signed_in_callers_are_stored(people: People,
                                                                   fresh: LiveServer) -> None:
    doctor = people.make_user("doctor")
    anonymous = await post(fresh, {"query": TYPENAME, "extensions": persisted(TYPENAME)})
    assert anonymous.json() == {"data": {"__typename": "Query"}}  # runs, but is not stored
    assert_not_found(await post(fresh, {"extensions": persisted(TYPENAME)}, doctor))
    invalid = "query Bad { nope }"
    response = await post(fresh, {"query": invalid, "extensions": persisted(invalid)}, doctor)
    assert codes(response) == ["GRAPHQL_VALIDATION_FAILED"]
    assert_not_found(await post(fresh, {"extensions": persisted(invalid)}, doctor))
    await post(fresh, {"query": TYPENAME, "extensions": persisted(TYPENAME)}, doctor)
    stored = await post(fresh, {"extensions": persisted(TYPENAME)})  # now anyone may use it
    assert stored.json() == {"data": {"__typename": "Query"}}


async def test_a_mutation_by_hash_over_get_is_still_405(people: People,
                                                       fresh: LiveServer) -> None:
    doctor = people.make_user("doctor")
    mutation = "mutation Typing { setTyping(roomId: \"r\", typing: true) }"
    await post(fresh, {"query": mutation, "extensions": persisted(mutation)}, doctor)
    response = await get(fresh, persisted(mutation), doctor)
    assert response.status_code == 405 and response.headers["allow"] == "POST"


async def test_persisted_queries_over_the_websocket(people: People, fresh: LiveServer) -> None:
    doctor = people.make_user("doctor")
    document = f"query Ws{uuid.uuid4().hex} {{ me {{ id }} }}"
    client = await connect(fresh.ws_url, doctor.token)
    try:
        await client.send({"id": "bad", "type": "subscribe", "payload": {
            "query": document, "extensions": persisted("{ other }")}})
        assert await client.rejected("bad") == ["BAD_REQUEST"]
        await client.send({"id": "unknown", "type": "subscribe", "payload": {
            "query": "", "extensions": persisted(document)}})
        assert await client.rejected("unknown") == ["PERSISTED_QUERY_NOT_FOUND"]
        await post(fresh, {"query": document, "extensions": persisted(document)}, doctor)
        await client.send({"id": "known", "type": "subscribe", "payload": {
            "query": "", "extensions": persisted(document)}})
        assert (await client.next_message(id="known"))["payload"] == {
            "data": {"me": {"id": doctor.id}}}
    finally:
        await client.close()


async def test_the_memory_store_is_bounded_in_documents_and_bytes() -> None:
    store = MemoryDocumentStore(max_documents=3, max_bytes=100)
    for name in "abc":
        await store.put(name, name * 10)
    assert await store.get("a") == "a" * 10  # a is now the most recently used
    await store.put("d", "d" * 10)
    assert [await store.get(k) is not None for k in "abcd"] == [True, False, True, True]
    # Those reads left a, c, d in that order of use; 30 + 75 bytes > 100: a goes.
    await store.put("e", "e" * 75)
    assert (len(store), store.bytes) == (3, 95)
    assert [await store.get(k) is not None for k in "acde"] == [False, True, True, True]
    await store.put("huge", "x" * 101)  # larger than the whole budget: never stored
    assert await store.get("huge") is None
    big = MemoryDocumentStore(max_documents=10, max_bytes=10 * MAX_DOCUMENT_BYTES)
    await big.put("over", "x" * (MAX_DOCUMENT_BYTES + 1))
    assert len(big) == 0


# --- trusted documents ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "persisted-query-manifest.json"
    # Also what the shared helpers send (register, make_room, send), in their exact text.
    operations = [{"id": sha(body), "body": body} for body in (ME, EVENTS, REGISTER,
                                                                CREATE_ROOM, SEND)]
    operations.append({"id": CUSTOM_ID, "name": "Typename", "type": "query",
                       "body": TYPENAME})
    path.write_text(json.dumps({"format": "apollo-persisted-query-manifest", "version": 1,
                                "operations": operations}))
    return path


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory, manifest: Path) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, "trusted-graph", persisted_queries_only=True,
                 persisted_queries_manifest=manifest) as server:
        yield server


@pytest.fixture
async def insiders(trusted: LiveServer) -> AsyncIterator[People]:
    async with people_of(trusted) as crowd:
        yield crowd


async def test_trusted_documents_over_http(insiders: People, trusted: LiveServer) -> None:
    doctor = insiders.make_user("doctor")
    me = {"data": {"me": {"id": doctor.id}}}
    # The manifest's operations: by hash (POST or GET), in full, or both.
    assert (await post(trusted, {"extensions": persisted(ME)}, doctor)).json() == me
    assert (await get(trusted, persisted(ME), doctor)).json() == me
    assert (await post(trusted, {"query": ME}, doctor)).json() == me
    assert (await post(trusted, {"query": ME, "extensions": persisted(ME)}, doctor)).json() == me
    custom = await get(trusted, persisted(digest=CUSTOM_ID))  # a manifest's own id
    assert custom.json() == {"data": {"__typename": "Query"}}
    # Anything else: not allowed, and nothing is learnt from trying.
    other = "query Other { me { displayName } }"
    for body in ({"query": other}, {"query": other, "extensions": persisted(other)},
                 {"extensions": persisted(other)}, {"query": "{ __typename }"}):
        for accept, status in ((JSON, 200), (GR, 400)):
            response = await post(trusted, body, doctor, accept)
            assert (response.status_code, codes(response)) == (
                status, ["PERSISTED_QUERY_NOT_ALLOWED"]), body
    refused = await post(trusted, {"extensions": persisted(other)}, doctor)
    assert codes(refused) == ["PERSISTED_QUERY_NOT_ALLOWED"]
    mismatch = await post(trusted, {"query": other, "extensions": persisted(ME)}, doctor)
    assert (mismatch.status_code, codes(mismatch)) == (400, ["BAD_REQUEST"])


async def test_trusted_documents_over_the_websocket(insiders: People,
                                                    trusted: LiveServer) -> None:
    host, member = insiders.make_user("doctor"), insiders.make_user("student")
    await register(host, member)  # the manifest has what these helpers send
    room = (await make_room(host, invite=[member]))["id"]
    client = await connect(trusted.ws_url, member.token)
    try:
        # Not in the manifest: an `error` for that operation; the connection carries on.
        await client.subscribe("free", "subscription { roomEvents(roomId: \"x\") { cursor } }")
        assert await client.rejected("free") == ["PERSISTED_QUERY_NOT_ALLOWED"]
        await client.send({"id": "bad", "type": "subscribe", "payload": {
            "query": "query Other { me { id } }", "extensions": persisted(ME)}})
        assert await client.rejected("bad") == ["BAD_REQUEST"]
        # The manifest's query by hash alone, and its subscription in full.
        await client.send({"id": "me", "type": "subscribe",
                           "payload": {"query": "", "extensions": persisted(ME)}})
        assert (await client.next_message(id="me"))["payload"] == {
            "data": {"me": {"id": member.id}}}
        await client.subscribe("events", EVENTS, {"room": room})
        await attached(trusted, room, 1)
        await send(host, room, "trusted")
        (event,) = await client.durable("events", 1)
        assert event["message"] == {"content": "trusted"}
    finally:
        await client.close()


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "named"), [
    ({"PERSISTED_QUERIES_ONLY": "true"}, "PERSISTED_QUERIES_ONLY"),
    ({"PERSISTED_QUERIES_ONLY": "sometimes"}, "PERSISTED_QUERIES_ONLY"),
    ({"PERSISTED_QUERIES_MANIFEST": "/nonexistent/manifest.json"}, "PERSISTED_QUERIES_MANIFEST"),
    ({"PERSISTED_QUERIES_MANIFEST": "BAD_FORMAT"}, "PERSISTED_QUERIES_MANIFEST"),
    ({"PERSISTED_QUERIES_MANIFEST": "NOT_JSON"}, "PERSISTED_QUERIES_MANIFEST"),
    ({"PERSISTED_QUERIES_CACHE_SIZE": "-1"}, "PERSISTED_QUERIES_CACHE_SIZE"),
    ({"PERSISTED_QUERIES_CACHE_BYTES": "lots"}, "PERSISTED_QUERIES_CACHE_BYTES"),
    ({"PERSISTED_QUERIES_TTL": "5"}, "PERSISTED_QUERIES_TTL"),
])
def test_bad_persisted_query_settings_name_the_variable(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str],
        named: str) -> None:
    bad_format = tmp_path / "bad-format.json"
    bad_format.write_text(json.dumps({"format": "something-else", "version": 1,
                                      "operations": []}))
    not_json = tmp_path / "not-json.json"
    not_json.write_text("{nope")
    files = {"BAD_FORMAT": str(bad_format), "NOT_JSON": str(not_json)}
    monkeypatch.setenv("ENVIRONMENT", "development")
    for name, value in env.items():
        monkeypatch.setenv(name, files.get(value, value))
    with pytest.raises(SystemExit) as info:
        load_settings()
    message = str(info.value.code)
    assert message.startswith("invalid configuration:") and f"{named}:" in message, message


def test_a_good_manifest_loads(monkeypatch: pytest.MonkeyPatch, manifest: Path) -> None:
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("PERSISTED_QUERIES_ONLY", "true")
    monkeypatch.setenv("PERSISTED_QUERIES_MANIFEST", str(manifest))
    settings = load_settings()
    assert settings.trusted_documents[sha(ME)] == ME
    assert settings.trusted_documents[CUSTOM_ID] == TYPENAME
    assert settings.trusted_documents[sha(TYPENAME)] == TYPENAME

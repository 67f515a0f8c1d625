"""Errors and transport over real HTTP and WebSocket: authentication failures, masked
internal errors, malformed requests, health and readiness, graphql-transport-ws, GraphiQL."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import websockets
from joserfc import jwt
from joserfc.jwk import OctKey
from starlette.requests import Request
from websockets.asyncio.client import ClientConnection, connect

import app as app_module
import graph_db.users
from tests.conftest import SECRET
from tests.conftest import make_settings as settings_for
from tests.harness import LiveServer
from tests.personas import People
from tests.processes import java_pids

ME = "{ me { id } }"
AUDIENCE = "collab-api"


def mint(secret: str = SECRET, alg: str = "HS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"sub": "doctor-jwt", "name": "Dr Jwt", "role": "doctor", "iat": now,
              "exp": now + 600, **overrides}
    return jwt.encode({"alg": alg}, {k: v for k, v in claims.items() if v is not None},
                      OctKey.import_key(secret), algorithms=[alg])


def unsigned(**overrides: Any) -> str:
    def seg(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    now = int(time.time())
    claims = {"sub": "doctor-jwt", "name": "Dr Jwt", "role": "doctor", "iat": now,
              "exp": now + 600, **overrides}
    return f"{seg({'alg': 'none', 'typ': 'JWT'})}.{seg(claims)}."


def tampered() -> str:
    header, _, signature = mint().split(".")
    payload = base64.urlsafe_b64encode(json.dumps(
        {"sub": "admin-1", "name": "Eve", "role": "admin",
         "exp": int(time.time()) + 600}).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


async def post(base_url: str, body: Any = None, *, token: str | None = None,
               headers: dict[str, str] | None = None, content: bytes | None = None,
               method: str = "POST") -> httpx.Response:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        if content is not None:
            return await client.request(method, "/graphql", content=content,
                                        headers=all_headers)
        return await client.request(method, "/graphql", json=body, headers=all_headers)


def codes(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    errors = response.json()["errors"]
    return [e["extensions"]["code"] for e in errors]


def no_leak(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    for marker in ("Traceback", 'File "', "site-packages", ".py\""):
        assert marker not in response.text, response.text


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """ENVIRONMENT=production with a real secret and JWT_AUDIENCE configured."""
    server = LiveServer(settings_for(tmp_path_factory.mktemp("prod-graph"),
                                      environment="production", jwt_audience=AUDIENCE,
                                      allow_insecure_http=True)).start()
    yield server
    server.stop()


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer a b",
                                    "Bearer not-a-jwt"])
async def test_missing_or_malformed_credentials(fresh: LiveServer, header: str | None) -> None:
    headers = {} if header is None else {"authorization": header}
    response = await post(fresh.url, {"query": ME}, headers=headers)
    assert codes(response) == ["UNAUTHENTICATED"]
    assert response.json()["data"] is None


@pytest.mark.parametrize("token", [
    pytest.param(mint(exp=int(time.time()) - 3600), id="expired"),
    pytest.param(mint(secret="another-secret-0123456789abcdef"), id="wrong-signature"),
    pytest.param(unsigned(), id="alg-none"),
    pytest.param(tampered(), id="tampered-payload"),
    pytest.param(mint(alg="HS512"), id="other-hmac-alg"),
    pytest.param(mint(nbf=int(time.time()) + 3600), id="not-yet-valid"),
    pytest.param(mint(role="superuser"), id="unknown-role"),
    pytest.param(mint(sub=None), id="no-subject"),
])
async def test_jwt_failures(fresh: LiveServer, token: str) -> None:
    response = await post(fresh.url, {"query": ME}, token=token)
    assert codes(response) == ["UNAUTHENTICATED"]
    rows = fresh.call(fresh.services.db.read_rows("MATCH (u:User) RETURN count(u) AS n"))
    assert rows == [{"n": 0}]  # nobody was created from a rejected token


async def test_valid_hand_made_token(fresh: LiveServer) -> None:
    response = await post(fresh.url, {"query": ME}, token=mint())
    assert response.json() == {"data": {"me": {"id": "doctor-jwt"}}}


async def test_audience_is_enforced(production: LiveServer) -> None:
    for token in (mint(), mint(aud="someone-else"), mint(aud=["other", "more"])):
        response = await post(production.url, {"query": ME}, token=token)
        assert codes(response) == ["UNAUTHENTICATED"]
    response = await post(production.url, {"query": ME}, token=mint(aud=AUDIENCE))
    assert response.json() == {"data": {"me": {"id": "doctor-jwt"}}}


# --- masked internal errors -----------------------------------------------------------------


async def test_resolver_crash_is_masked(people: People, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    doc = people.make_user("doctor")
    await doc.gql(ME)

    async def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret-internal-detail: bolt://root:hunter2@db")

    monkeypatch.setattr(graph_db.users, "search_users", boom)
    query = "{ users { edges { node { id } } } }"
    with caplog.at_level(logging.ERROR, logger="collaboration.errors"):
        response = await doc.client.post(
            "/graphql", json={"query": query},
            headers={"authorization": f"Bearer {doc.token}", "x-request-id": "req-42.a_b"})
    assert response.status_code == 200
    no_leak(response)
    assert "secret-internal-detail" not in response.text and "hunter2" not in response.text
    (error,) = response.json()["errors"]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-42.a_b"}
    logged = [r for r in caplog.records if "req-42.a_b" in r.getMessage()]
    assert logged and logged[0].exc_info is not None

    # Without a usable X-Request-Id the service makes one up.
    response = await doc.client.post(
        "/graphql", json={"query": query},
        headers={"authorization": f"Bearer {doc.token}", "x-request-id": "bad id!"})
    (error,) = response.json()["errors"]
    request_id = error["extensions"]["requestId"]
    assert request_id and request_id != "bad id!"


# --- malformed requests ---------------------------------------------------------------------


async def test_graphql_level_errors_are_coded(people: People) -> None:
    doc = people.make_user("doctor")
    cases = {
        "{ me { id ": "GRAPHQL_PARSE_FAILED",
        "{ nope }": "GRAPHQL_VALIDATION_FAILED",
        "{ me { id nope } }": "GRAPHQL_VALIDATION_FAILED",
        "query($x: Int!) { me { id } }": "GRAPHQL_VALIDATION_FAILED",  # unused variable
        "query($id: ID!) { room(id: $id) { id } }": "BAD_USER_INPUT",  # not provided
        '{ room(id: 5.5) { id } }': "BAD_USER_INPUT",  # a literal of the wrong type
    }
    for query, code in cases.items():
        response = await doc.client.post("/graphql", json={"query": query}, headers={
            "authorization": f"Bearer {doc.token}"})
        no_leak(response)
        assert codes(response) == [code], query


TRANSPORT_CASES = [
    pytest.param(dict(content=b"{not json", headers={"content-type": "application/json"}),
                 id="invalid-json"),
    pytest.param(dict(content=b"[1, 2]", headers={"content-type": "application/json"}),
                 id="batch"),
    pytest.param(dict(body={"query": 5}), id="query-not-a-string"),
    pytest.param(dict(body={}), id="no-query"),
    pytest.param(dict(body={"query": ME, "variables": [1]}), id="variables-not-an-object"),
    pytest.param(dict(content=b"{ me { id } }", headers={"content-type": "text/plain"}),
                 id="wrong-content-type"),
    pytest.param(dict(method="GET", content=b"", headers={"accept": "application/json"}),
                 id="get"),
    pytest.param(dict(method="PUT", body={"query": ME}), id="put"),
]


@pytest.mark.parametrize("request_kw", TRANSPORT_CASES)
async def test_malformed_http_requests_never_500(live: LiveServer,
                                                 request_kw: dict[str, Any]) -> None:
    response = await post(live.url, request_kw.pop("body", None), **request_kw)
    no_leak(response)
    assert 400 <= response.status_code < 500
    if response.headers.get("content-type", "").startswith("application/json"):
        assert all("code" in e.get("extensions", {}) for e in response.json()["errors"])


async def test_transport_errors_are_json_with_a_code(live: LiveServer) -> None:
    response = await post(live.url, content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.headers["content-type"].startswith("application/json")
    assert all("code" in e["extensions"] for e in response.json()["errors"])


# --- health and readiness -------------------------------------------------------------------


async def test_healthz_and_readyz(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "graph": True})


def fake_request(services: object) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(services=services))
    return Request({"type": "http", "method": "GET", "path": "/readyz", "headers": [],
                    "app": app})


async def test_readyz_logic_without_a_database() -> None:
    class DeadDB:
        async def ping(self) -> bool:
            return False

    response = await app_module.readyz(fake_request(SimpleNamespace(db=DeadDB())))
    assert response.status_code == 503
    assert json.loads(bytes(response.body)) == {"status": "unavailable", "graph": False}
    response = await app_module.readyz(fake_request(None))  # lifespan not finished yet
    assert response.status_code == 503


async def test_readyz_is_503_soon_after_the_database_dies_and_200_once_restarted(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    import os
    import signal

    data_dir = tmp_path_factory.mktemp("doomed-graph")
    server = LiveServer(settings_for(data_dir)).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.get("/readyz")).status_code == 200
            (pid,) = java_pids(data_dir)
            os.kill(pid, signal.SIGKILL)
            started = time.monotonic()
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert time.monotonic() - started < 5  # not the driver's 30 s of retries
            assert (await client.get("/healthz")).status_code == 200
            # The service restarts its embedded database by itself.
            while (await client.get("/readyz")).status_code != 200:
                assert time.monotonic() - started < 60, "the embedded database stayed down"
                await asyncio.sleep(0.2)
            (restarted,) = java_pids(data_dir)
            assert restarted != pid
    finally:
        server.stop()
    assert java_pids(data_dir) == []


# --- WebSocket: graphql-transport-ws --------------------------------------------------------


async def ws_open(live: LiveServer, payload: dict[str, Any] | None,
                  protocol: str = "graphql-transport-ws") -> ClientConnection:
    ws = await connect(live.ws_url, subprotocols=[protocol])  # type: ignore[list-item]
    message: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        message["payload"] = payload
    await ws.send(json.dumps(message))
    return ws


async def close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await ws.recv()
    return info.value.rcvd.code if info.value.rcvd else None


@pytest.mark.parametrize("style", ["authorization", "authToken"])
async def test_ws_query_over_subscribe(people: People, fresh: LiveServer, style: str) -> None:
    doc = people.make_user("doctor")
    payload = ({"authorization": f"Bearer {doc.token}"} if style == "authorization"
               else {"authToken": doc.token})
    ws = await ws_open(fresh, payload)
    try:
        assert ws.subprotocol == "graphql-transport-ws"
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "q1", "type": "subscribe",
                                  "payload": {"query": ME}}))
        assert json.loads(await ws.recv()) == {
            "id": "q1", "type": "next", "payload": {"data": {"me": {"id": doc.id}}}}
        assert json.loads(await ws.recv()) == {"id": "q1", "type": "complete"}
    finally:
        await ws.close()


# Bad tokens, the legacy subprotocol and a missing connection_init are in
# test_ws_protocol.py, with every other close code.


# --- GraphiQL -------------------------------------------------------------------------------


async def test_graphiql_outside_production_only(live: LiveServer,
                                                production: LiveServer) -> None:
    html = {"accept": "text/html"}
    async with httpx.AsyncClient(base_url=live.url) as client:
        page = await client.get("/graphql", headers=html)
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    async with httpx.AsyncClient(base_url=production.url) as client:
        page = await client.get("/graphql", headers=html)
        no_leak(page)
        assert page.status_code in (400, 404, 405)
        assert "graphiql" not in page.text.lower()
        assert (await client.get("/graphiql/graphiql.js")).status_code == 404
        # A browser's GET with a query: its */*;q=0.8 takes JSON, so it runs.
        response = await client.get("/graphql", params={"query": "{ __typename }"}, headers={
            "accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert response.json() == {"data": {"__typename": "Query"}}

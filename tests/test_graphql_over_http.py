"""GraphQL over HTTP against the live service: queries over GET, mutations refused there with
405, the two response media types and their status codes, Accept negotiation, GraphiQL for a
browser's page load, and malformed requests answered 4xx with BAD_REQUEST."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.harness import LiveServer
from tests.personas import People, Persona
from transport.ide import CSP
from transport.media import negotiate

GR = "application/graphql-response+json"
JSON = "application/json"
ME = "{ me { id } }"
BROWSER = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
           "*/*;q=0.8")
URQL = ("application/graphql-response+json, application/graphql+json, application/json, "
        "text/event-stream, multipart/mixed")
APOLLO = "application/graphql-response+json,application/json;q=0.9"
CREATE_ROOM = ('mutation { createRoom(input: {name: "R", type: CASE_DISCUSSION, '
               'visibility: PUBLIC}) { id } }')


async def request(live: LiveServer, method: str = "POST", *, accept: str | None = None,
                  who: Persona | None = None, json: Any = None,
                  params: dict[str, str] | None = None, content: bytes | None = None,
                  headers: dict[str, str] | None = None) -> httpx.Response:
    sent = dict(headers or {})
    if accept is not None:
        sent["accept"] = accept
    if who is not None:
        sent["authorization"] = f"Bearer {who.token}"
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        return await client.request(method, "/graphql", json=json, params=params,
                                    content=content, headers=sent)


def codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json()["errors"]]


def media(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0]


# --- GET ------------------------------------------------------------------------------------


async def test_get_runs_queries_with_variables_and_operation_name(people: People,
                                                                  fresh: LiveServer) -> None:
    doctor = people.make_user("doctor")
    response = await request(fresh, "GET", accept=JSON, who=doctor, params={
        "query": "query Who($id: ID!) { user(id: $id) { id } } query Me { me { id } }",
        "variables": '{"id": "nobody"}', "operationName": "Who", "extensions": "{}"})
    assert (response.status_code, media(response)) == (200, JSON)
    assert response.json() == {"data": {"user": None}}
    assert response.headers["vary"].lower().startswith("accept")
    response = await request(fresh, "GET", accept=GR, who=doctor, params={"query": ME})
    assert (response.status_code, media(response)) == (200, GR)
    assert response.json() == {"data": {"me": {"id": doctor.id}}}


@pytest.mark.parametrize("accept", [JSON, GR, "*/*"])
async def test_mutations_over_get_are_405_and_not_run(people: People, fresh: LiveServer,
                                                      accept: str) -> None:
    doctor = people.make_user("doctor")
    response = await request(fresh, "GET", accept=accept, who=doctor,
                             params={"query": CREATE_ROOM})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert codes(response) == ["BAD_REQUEST"]
    assert "data" not in response.json()
    rooms = fresh.call(fresh.services.db.read_rows("MATCH (r:Room) RETURN count(r) AS n"))
    assert rooms == [{"n": 0}]
    created = await request(fresh, accept=accept, who=doctor, json={"query": CREATE_ROOM})
    assert created.status_code == 200 and created.json()["data"]["createRoom"]["id"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_subscriptions_over_http_point_at_the_websocket(people: People, live: LiveServer,
                                                              method: str) -> None:
    doctor = people.make_user("doctor")
    query = "subscription { roomEvents(roomId: \"x\") { cursor } }"
    kw: dict[str, Any] = ({"params": {"query": query}} if method == "GET"
                          else {"json": {"query": query}})
    response = await request(live, method, accept=JSON, who=doctor, **kw)
    assert response.status_code == 200  # application/json: errors in a 200
    assert codes(response) == ["BAD_REQUEST"]
    assert "WebSocket" in response.json()["errors"][0]["message"]
    response = await request(live, method, accept=GR, who=doctor, **kw)
    assert response.status_code == 400 and codes(response) == ["BAD_REQUEST"]
    assert "data" not in response.json()


# --- the two media types ----------------------------------------------------------------------

REQUEST_ERRORS = [
    pytest.param({"query": "{ me { id "}, "GRAPHQL_PARSE_FAILED", id="parse"),
    pytest.param({"query": "{ nope }"}, "GRAPHQL_VALIDATION_FAILED", id="validation"),
    pytest.param({"query": "query($id: ID!) { user(id: $id) { id } }", "variables": {"id": None}},
                 "BAD_USER_INPUT", id="variable-coercion"),
    pytest.param({"query": "query A { me { id } } query B { me { id } }"},
                 "OPERATION_RESOLUTION_FAILURE", id="no-operation-name"),
    pytest.param({"query": "query A { me { id } }", "operationName": "Z"},
                 "OPERATION_RESOLUTION_FAILURE", id="unknown-operation-name"),
    pytest.param({"query": "fragment F on Query { __typename }"},
                 "OPERATION_RESOLUTION_FAILURE", id="no-operation"),
]


@pytest.mark.parametrize(("body", "code"), REQUEST_ERRORS)
async def test_request_errors_by_media_type(people: People, live: LiveServer,
                                            body: dict[str, Any], code: str) -> None:
    doctor = people.make_user("doctor")
    legacy = await request(live, accept=JSON, who=doctor, json=body)
    assert (legacy.status_code, media(legacy), codes(legacy)) == (200, JSON, [code])
    assert legacy.json()["data"] is None  # as this service always answered
    spec = await request(live, accept=GR, who=doctor, json=body)
    assert (spec.status_code, media(spec), codes(spec)) == (400, GR, [code])
    assert "data" not in spec.json()


async def test_once_execution_started_it_is_200_with_data(live: LiveServer) -> None:
    # No token: `me` (non-null) fails during execution, so data is null but present.
    for accept in (GR, JSON):
        response = await request(live, accept=accept, json={"query": ME})
        assert response.status_code == 200
        assert response.json()["data"] is None
        assert codes(response) == ["UNAUTHENTICATED"]
        assert response.json()["errors"][0]["path"] == ["me"]


@pytest.mark.parametrize(("accept", "expected"), [
    (None, JSON), ("", JSON), ("*/*", JSON), ("application/*", JSON), (JSON, JSON), (GR, GR),
    (APOLLO, GR), (URQL, GR), (f"{JSON}, {GR}", GR), (f"{GR};q=0.5, {JSON}", JSON),
    (f"{JSON};q=0.9, */*;q=1", GR), (f"{GR}, */*;q=0.1", GR), (f"{JSON}, text/html", JSON),
    (f"{JSON};charset=utf-8", JSON), ("text/plain", None), (f"{JSON};q=0, {GR};q=0", None),
    (f"*/*, {JSON};q=0", GR),
])
async def test_accept_negotiation(live: LiveServer, accept: str | None,
                                  expected: str | None) -> None:
    headers = {} if accept is None else {"accept": accept}
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        response = await client.post("/graphql", json={"query": "{ __typename }"},
                                     headers=headers)
    if expected is None:
        assert response.status_code == 406
        assert media(response) == JSON and codes(response) == ["BAD_REQUEST"]
    else:
        assert (response.status_code, media(response)) == (200, expected)
        assert response.json() == {"data": {"__typename": "Query"}}


def test_negotiate_prefers_the_page_only_when_the_client_does() -> None:
    offered = (GR, JSON, "text/html")
    assert negotiate(BROWSER, offered) == "text/html"
    assert negotiate("text/html, */*", offered) == "text/html"
    assert negotiate("*/*", offered) == JSON
    assert negotiate(f"text/html, {JSON}", offered) == JSON
    assert negotiate(f"text/html;q=0.5, {JSON}", offered) == JSON
    assert negotiate("text/*", offered) == "text/html"
    assert negotiate("application/json;q=abc, bogus, */*", offered) == JSON


# --- GraphiQL and page loads ------------------------------------------------------------------


async def test_a_browser_page_load_gets_graphiql_other_gets_execute(live: LiveServer) -> None:
    for params in ({}, {"query": "{ __typename }"}):
        page = await request(live, "GET", accept=BROWSER, params=params)
        assert page.status_code == 200 and media(page) == "text/html"
        assert page.headers["content-security-policy"] == CSP
        assert '<script defer src="/graphiql/graphiql.js">' in page.text
        assert "<script>" not in page.text  # nothing inline: the CSP holds
        assert "Authorization" in page.text and "make token" in page.text
    for accept in ("*/*", None, JSON, GR):
        response = await request(live, "GET", accept=accept, params={"query": "{ __typename }"})
        assert response.status_code == 200, accept
        assert response.json() == {"data": {"__typename": "Query"}}


async def test_graphiql_assets_are_served_locally(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        for name, kind in (("graphiql.js", "text/javascript"), ("graphiql.css", "text/css"),
                           ("graphql.worker.js", "text/javascript"),
                           ("THIRD-PARTY-LICENSES.txt", "text/plain")):
            response = await client.get(f"/graphiql/{name}")
            assert response.status_code == 200, name
            assert media(response) == kind
            assert response.headers["content-security-policy"] == CSP
        licences = (await client.get("/graphiql/THIRD-PARTY-LICENSES.txt")).text
        assert "graphiql 5." in licences and "@graphiql/plugin-explorer 5." in licences
        for missing in ("nope.js", "..%2Fide.py", "%2E%2E%2F%2E%2E%2Fsettings.py"):
            assert (await client.get(f"/graphiql/{missing}")).status_code == 404


# --- malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "status"), [
    pytest.param({"method": "PUT", "json": {"query": ME}}, 405, id="put"),
    pytest.param({"method": "DELETE"}, 405, id="delete"),
    pytest.param({"content": b"{ me { id } }", "headers": {"content-type": "text/plain"}}, 415,
                 id="text-plain"),
    pytest.param({"content": b"query=%7B%7D", "headers": {
        "content-type": "application/x-www-form-urlencoded"}}, 415, id="form"),
    pytest.param({"content": b'{"query": "{ me { id } }"}'}, 415, id="no-content-type"),
    pytest.param({"content": '{"query": "{ me { id } }"}'.encode("latin-1"), "headers": {
        "content-type": "application/json; charset=latin-1"}}, 415, id="latin-1"),
    pytest.param({"content": b"", "headers": {"content-type": JSON}}, 400, id="empty-body"),
    pytest.param({"content": b"\xff\xfe{}", "headers": {"content-type": JSON}}, 400,
                 id="not-utf-8"),
    pytest.param({"json": {"query": ME, "operationName": ["A"]}}, 400, id="operation-name-list"),
    pytest.param({"json": {"query": ME, "extensions": "x"}}, 400, id="extensions-string"),
    pytest.param({"json": [{"query": ME}]}, 400, id="batch"),
    pytest.param({"json": "query"}, 400, id="body-a-string"),
    pytest.param({"method": "GET", "params": {"query": ME, "variables": "{nope"}}, 400,
                 id="get-variables-not-json"),
    pytest.param({"method": "GET", "params": {"query": ME, "variables": "[1]"}}, 400,
                 id="get-variables-a-list"),
    pytest.param({"method": "GET", "content": None,
                  "headers": {}}, 400, id="get-without-query"),
])
async def test_malformed_requests_are_4xx_with_bad_request(live: LiveServer, kw: dict[str, Any],
                                                           status: int) -> None:
    response = await request(live, kw.pop("method", "POST"), accept=GR, **kw)
    assert response.status_code == status, response.text
    assert codes(response) == ["BAD_REQUEST"]
    if status == 405:
        assert response.headers["allow"] == "GET, POST"
    if status == 415:  # multipart too: uploads (transport/uploads.py)
        assert response.headers["accept-post"] == f"{JSON}, multipart/form-data"


async def test_repeated_get_parameters_are_refused(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        response = await client.get("/graphql?query={__typename}&query={me{id}}",
                                    headers={"accept": JSON})
    assert response.status_code == 400 and codes(response) == ["BAD_REQUEST"]

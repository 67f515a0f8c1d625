"""What production answers differently (README "Limits"): no "Did you mean …?" in any error
(graphql-core's hints would map the schema with introspection off), no introspection unless
ENABLE_INTROSPECTION, while `__typename` and federation's `_service { sdl }` keep working.
The development (test) service answers the same documents with the hints, so these tests see
them go."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from schema import build_schema
from settings import Settings
from tests.conftest import make_settings, people_of, serving
from tests.harness import LiveServer
from tests.personas import People
from tests.wsclient import connect
from transport.documents import Admission, DocumentCache

HINTED = {
    "field": ("{ mee { id } }", None),
    "nested field": ("{ me { displayNam } }", None),
    "argument": ("{ rooms(firts: 1) { totalCount } }", None),
    "enum literal": ("{ rooms(filter: {type: CASE_DISCUSION}) { totalCount } }", None),
    "input field": ("{ rooms(filter: {tipe: TEACHING}) { totalCount } }", None),
    "type": ("query($r: Rol) { users(role: $r) { edges { node { id } } } }", None),
    "enum variable": ("query($r: Role) { users(role: $r) { edges { node { id } } } }",
                      {"r": "DOKTOR"}),
}
INTROSPECTION = ["{ __schema { queryType { name } } }", '{ __type(name: "Room") { name } }']


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, "production", environment="production",
                 allow_insecure_http=True) as server:  # TLS: test_transport_security.py
        yield server


@pytest.fixture
async def crowd(production: LiveServer) -> AsyncIterator[People]:
    async with people_of(production) as people:
        # Dev tokens are not issued in production; the same secret signs them in test.
        people.settings = production.settings.model_copy(update={"environment": "test"})
        yield people


def messages(body: dict[str, Any]) -> list[str]:
    return [e["message"] for e in body.get("errors", [])]


@pytest.mark.parametrize("case", sorted(HINTED))
async def test_no_suggestions_in_production(production: LiveServer, crowd: People,
                                            people: People, case: str) -> None:
    query, variables = HINTED[case]
    there = await crowd.make_user("doctor").post(query, variables)
    assert there["errors"] and not any("Did you mean" in m for m in messages(there)), there
    # The same document in development: the hint is there (so the test sees it go).
    here = await people.make_user("doctor").post(query, variables)
    assert any("Did you mean" in m for m in messages(here)), here


async def test_no_suggestions_over_the_websocket(production: LiveServer, crowd: People) -> None:
    doctor = crowd.make_user("doctor")
    async with await connect(production.ws_url, doctor.token) as ws:
        await ws.subscribe("bad", "{ mee { id } }")
        reply = await ws.next_message(id="bad")
        assert reply["type"] == "error" and "Did you mean" not in str(reply), reply
        query, variables = HINTED["enum variable"]
        await ws.subscribe("var", query, variables)
        reply = await ws.next_message(id="var")
        assert "errors" in str(reply) and "Did you mean" not in str(reply), reply
        await ws.subscribe("events", "subscription($r: ID!, $a: String) { roomEvents(roomId: $r"
                           ", after: $a) { cursor } }", {"r": "x", "a": 5})
        assert "Did you mean" not in str(await ws.next_message(id="events"))


@pytest.mark.parametrize("query", INTROSPECTION)
async def test_no_introspection_in_production(production: LiveServer, crowd: People,
                                              people: People, query: str) -> None:
    doctor = crowd.make_user("doctor")
    response = await doctor.client.post("/graphql", json={"query": query}, headers={
        "authorization": f"Bearer {doctor.token}",
        "accept": "application/graphql-response+json"})
    assert response.status_code == 400
    assert "data" not in response.json()
    assert {e["extensions"]["code"] for e in response.json()["errors"]} == {
        "INTROSPECTION_DISABLED"}
    async with await connect(production.ws_url, doctor.token) as ws:
        await ws.subscribe("i", query)
        assert set(await ws.rejected("i")) == {"INTROSPECTION_DISABLED"}
    # In development introspection answers.
    assert (await people.make_user("doctor").gql(query))


async def test_typename_and_the_federation_sdl_still_answer(production: LiveServer,
                                                           crowd: People) -> None:
    doctor = crowd.make_user("doctor")
    assert await doctor.gql("{ __typename }") == {"__typename": "Query"}
    anonymous = doctor.client  # no token: what a gateway's composition sends
    response = await anonymous.post("/graphql", json={"query": "{ _service { sdl } }"})
    assert response.status_code == 200
    assert "type Room @key" in response.json()["data"]["_service"]["sdl"]


def test_enable_introspection_turns_it_on_in_production(tmp_path_factory: pytest.TempPathFactory
                                                        ) -> None:
    data = tmp_path_factory.mktemp("settings")
    insecure = {"allow_insecure_http": True}  # TLS is another test's
    assert make_settings(data, environment="production", **insecure).introspection is False
    assert make_settings(data, environment="staging", **insecure).introspection is False
    assert make_settings(data).introspection is True  # test
    on: Settings = make_settings(data, environment="production", enable_introspection=True,
                                 **insecure)
    assert on.introspection is True
    documents = DocumentCache(build_schema()._schema, Admission(introspection=on.introspection,
                                                                suggestions=False))
    assert documents.get(INTROSPECTION[0], None).errors == []
    off = DocumentCache(build_schema()._schema, Admission(introspection=False))
    refused = off.get(INTROSPECTION[0], None).errors
    assert refused and all(e.extensions == {"code": "INTROSPECTION_DISABLED"} for e in refused)

"""HTTP operations run on graphql-core directly (transport/executor.py) instead of through
strawberry's Schema.execute: the answers must be the same, data and errors alike, so each
document here is sent twice to one server, once per path. Should strawberry change what its
execution does (its execution context class, how Info reaches resolvers, error handling),
this is the test that says so."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from transport.endpoint import GraphQLEndpoint

SEND = """mutation($r: ID!, $c: String!) {
  sendMessage(roomId: $r, input: {content: $c}) { id content author { displayName } } }"""


def endpoint_of(live: LiveServer) -> GraphQLEndpoint:
    found = next(r.endpoint for r in live.app.routes
                 if isinstance(r, Route) and r.path == "/graphql")
    assert isinstance(found, GraphQLEndpoint)
    return found


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """Ids that differ by nature between two runs of a mutation are left out."""
    data = body.get("data") or {}
    sent = data.get("sendMessage")
    if isinstance(sent, dict):
        sent.pop("id", None)
    return body


async def both_ways(live: LiveServer, who: Persona, query: str,
                    variables: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    handler = endpoint_of(live).http_handler
    direct = handler.direct
    assert direct is not None, "without spans configured, HTTP runs on graphql-core"
    fast = await who.post(query, variables)
    handler.direct = None  # strawberry's Schema.execute, as with OpenTelemetry spans
    try:
        slow = await who.post(query, variables)
    finally:
        handler.direct = direct
    return comparable(fast), comparable(slow)


async def test_both_paths_answer_alike(fresh: LiveServer, people: People) -> None:
    doctor, student = people.make_user("doctor"), people.make_user("student")
    await register(doctor, student)
    room = (await make_room(doctor, invite=[student]))["id"]
    await doctor.gql(SEND, r=room, c="hello @nobody")
    cases: list[tuple[Persona, str, dict[str, Any]]] = [
        (doctor, "{ me { id displayName role } }", {}),
        (doctor, "query($id: ID!) { room(id: $id) { id name participantCount host { id } "
                 "messages(last: 5) { edges { node { content reactions { emoji } "
                 "replyCount author { displayName } } } } } }", {"id": room}),
        (student, "{ rooms(filter: {mine: true}) { totalCount edges { node { name } } } }", {}),
        (doctor, '{ room(id: "missing") { id } }', {}),  # null, no error
        (doctor, "query($n: Int) { rooms(first: $n) { totalCount } }", {"n": "many"}),
        (doctor, "query($n: Int) { rooms(first: $n) { totalCount } }", {"n": 100_000}),
        (student, "mutation($id: ID!) { deleteRoom(id: $id) }", {"id": room}),  # FORBIDDEN
        (doctor, SEND, {"r": room, "c": ""}),  # BAD_USER_INPUT
        (doctor, SEND, {"r": room, "c": "again"}),
        (doctor, "{ __typename me { __typename } }", {}),
    ]
    for who, query, variables in cases:
        fast, slow = await both_ways(fresh, who, query, variables)
        assert fast == slow, (query, variables, fast, slow)
    # And errors carry their codes on the direct path too.
    fast, _ = await both_ways(fresh, student, "mutation($id: ID!) { deleteRoom(id: $id) }",
                              {"id": room})
    assert [e["extensions"]["code"] for e in fast["errors"]] == ["FORBIDDEN"]

"""Fuzzing, bounded for CI (derandomized: the same cases every run).

- Schemathesis in its GraphQL mode against the live service: every query and mutation
  (`_entities` included), with a token of each role, valid documents with arguments drawn from
  the schema's types (ids drawn from real rooms, messages and users as well as from arbitrary
  text) and invalid ones (its negative mode): never a 5xx, never "Unexpected error.".
- Hypothesis on the input checks the resolvers rely on (resolvers/validation.py, the emoji
  check, room-event cursors, page cursors and sizes): each either accepts a value or refuses
  it with BAD_USER_INPUT (or the ValueError its caller turns into one), nothing else.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import graphql
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.graphql import nodes
from schemathesis.specs.graphql.scalars import CUSTOM_SCALARS

from realtime import cursor as event_cursor
from resolvers import pagination, validation
from resolvers.errors import BadInput
from resolvers.messages import valid_emoji
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room

ROLES = ("admin", "teacher", "doctor", "student", "patient")
EXAMPLES = 12  # per operation, role and mode: ~2,900 requests in all
BOUNDED = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                   phases=[Phase.explicit, Phase.generate],
                   suppress_health_check=list(HealthCheck))
SEND = ("mutation($room: ID!, $text: String!) "
        "{ sendMessage(roomId: $room, input: {content: $text}) { id } }")


async def seed(people: People) -> tuple[dict[str, Persona], list[str]]:
    """A persona per role, rooms of each kind with messages and reactions: ids to aim at."""
    personas = {role: people.make_user(role) for role in ROLES}
    await register(*personas.values())
    ids = [p.id for p in personas.values()]
    for host, visibility in (("doctor", "PUBLIC"), ("teacher", "PRIVATE"), ("admin", "PRIVATE")):
        room = await make_room(personas[host], visibility=visibility,
                               invite=[personas["student"], personas["patient"]])
        message = (await personas[host].gql(SEND, room=room["id"], text="hello"))["sendMessage"]
        ids += [room["id"], message["id"]]
    return personas, ids


def _field(name: str, value: graphql.ValueNode) -> graphql.ObjectFieldNode:
    return graphql.ObjectFieldNode(name=graphql.NameNode(value=name), value=value)


def representations(ids: st.SearchStrategy[str]) -> st.SearchStrategy[graphql.ValueNode]:
    """`_entities` representations as a gateway sends them, and not quite."""
    typename = st.sampled_from(["Room", "User", "Message", "", "_Service"]).map(nodes.String)
    key = st.one_of(ids.map(nodes.String), st.integers(-5, 5).map(nodes.Int),
                    st.just(nodes.Null))
    return st.one_of(
        st.tuples(typename, key).map(lambda tk: nodes.Object(
            [_field("__typename", tk[0]), _field("id", tk[1])])),
        st.tuples(typename).map(lambda t: nodes.Object([_field("__typename", t[0])])),
        ids.map(nodes.String))


@pytest.fixture
def scalars(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    CUSTOM_SCALARS.pop("ID", None)
    CUSTOM_SCALARS.pop("_Any", None)
    CUSTOM_SCALARS.pop("Upload", None)


def test_schemathesis_every_operation_with_every_role(live: LiveServer, scalars: None) -> None:
    live.wipe()
    people = People(live.settings, live.url)
    personas, ids = live.call(seed(people))
    some_id = st.one_of(st.sampled_from(ids), st.text(max_size=40))
    schemathesis.graphql.scalar("ID", some_id.map(nodes.String))
    schemathesis.graphql.scalar("_Any", representations(some_id))
    # Over JSON an Upload can only be a value that is not a file: BAD_USER_INPUT.
    schemathesis.graphql.scalar("Upload", st.text(max_size=20).map(nodes.String))
    schema = schemathesis.graphql.from_url(f"{live.url}/graphql")
    federation = schema.include(name=["Query._entities", "Query._service"])
    operations = [result.ok() for found in (schema, federation)
                  for result in found.get_all_operations()]
    assert {op.label for op in operations} >= {"Query.me", "Query.rooms", "Query._entities",
                                               "Mutation.sendMessage", "Mutation.setTyping"}
    failures: list[str] = []
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    for role, persona in personas.items():
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz(operation.as_strategy(mode), f"{role} {operation.label} {mode.value}",
                     persona.token, failures, outcomes)
    live.call(people.aclose())
    print(f"schemathesis: {outcomes.total()} cases over {len(operations)} operations x "
          f"{len(ROLES)} roles x 2 modes in {time.monotonic() - started:.1f} s: "
          f"{dict(outcomes)}")
    assert not failures, "\n".join(failures[:20])


def fuzz(strategy: st.SearchStrategy[Any], label: str, token: str, failures: list[str],
         outcomes: Counter[str]) -> None:
    headers = {"authorization": f"Bearer {token}"}

    @BOUNDED
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        if response.status_code >= 500 or "Unexpected error." in response.text:
            failures.append(f"{label}: {response.status_code} {case.body!r} -> "
                            f"{response.text[:300]}")
        errors = response.json().get("errors") or [{"extensions": {"code": "ok"}}]
        outcomes[errors[0].get("extensions", {}).get("code", "?")] += 1

    run()


# -- the input checks ---------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=300)


@BOUNDED
@given(value=ANY_TEXT, low=st.integers(0, 5), high=st.integers(0, 200))
def test_text_is_trimmed_and_bounded_or_refused(value: str, low: int, high: int) -> None:
    try:
        cleaned = validation.text("f", value, min_len=low, max_len=high)
    except BadInput as error:
        assert error.extensions == {"code": "BAD_USER_INPUT", "field": "f"}
        return
    assert cleaned == value.strip() and low <= len(cleaned) <= high
    try:
        optional = validation.optional_text("f", value, max_len=high)
    except BadInput:
        return
    assert optional == (cleaned or None)


@BOUNDED
@given(values=st.lists(st.text(max_size=200), max_size=30), most=st.integers(0, 20))
def test_id_lists_are_deduplicated_and_bounded_or_refused(values: list[str], most: int) -> None:
    try:
        found = validation.id_list("ids", values, max_items=most)
    except BadInput:
        return
    assert found == list(dict.fromkeys(values)) and len(found) <= most
    assert all(0 < len(v) <= 128 for v in found)


@BOUNDED
@given(value=st.integers(), low=st.integers(-5, 5), high=st.integers(-5, 50))
def test_int_ranges(value: int, low: int, high: int) -> None:
    try:
        assert low <= validation.int_range("n", value, low, high) == value <= high
    except BadInput:
        assert not low <= value <= high


EMOJI = st.sampled_from(["👍", "❤️", "👍🏽", "👨‍👩‍👧", "🇫🇷", "1️⃣", "🏴‍☠️", "😀"])


@settings(BOUNDED, max_examples=300)
@given(value=st.one_of(ANY_TEXT, EMOJI, st.lists(EMOJI, max_size=3).map("".join)))
def test_emoji_is_one_emoji_or_refused(value: str) -> None:
    try:
        symbol = valid_emoji(value)
    except BadInput as error:
        assert error.extensions == {"code": "BAD_USER_INPUT", "field": "emoji"}
        return
    assert valid_emoji(symbol) == symbol and 0 < len(symbol) <= 32


@settings(BOUNDED, max_examples=300)
@given(room=st.text(max_size=60), cursor=st.one_of(ANY_TEXT, st.binary(max_size=60).map(
    lambda b: __import__("base64").urlsafe_b64encode(b).decode())))
def test_event_cursors_decode_or_refuse(room: str, cursor: str) -> None:
    try:
        seq = event_cursor.decode(room, cursor)
    except ValueError:
        return
    assert seq >= 0


@BOUNDED
@given(room=st.text(max_size=60), seq=st.integers(0, 2**63))
def test_event_cursors_round_trip(room: str, seq: int) -> None:
    assert event_cursor.decode(room, event_cursor.encode(room, seq)) == seq


@settings(BOUNDED, max_examples=300)
@given(cursor=st.one_of(st.none(), ANY_TEXT), kind=st.sampled_from(["rooms", "users"]))
def test_page_cursors_decode_or_refuse(cursor: str | None, kind: str) -> None:
    fp = pagination.fingerprint("viewer", None)
    try:
        keys = pagination.decode(kind, fp, cursor)
    except BadInput as error:
        assert error.extensions["code"] == "BAD_USER_INPUT"
        return
    assert keys is None or isinstance(keys, list)


@BOUNDED
@given(keys=st.lists(st.one_of(st.integers(), st.text(max_size=20)), min_size=1, max_size=3))
def test_page_cursors_round_trip(keys: list[int | str]) -> None:
    fp = pagination.fingerprint("viewer", "term")
    assert pagination.decode("users", fp, pagination.encode("users", fp, *keys)) == keys
    with pytest.raises(BadInput):
        pagination.decode("rooms", fp, pagination.encode("users", fp, *keys))


@BOUNDED
@given(size=st.one_of(st.none(), st.integers()))
def test_page_sizes(size: int | None) -> None:
    try:
        assert 1 <= pagination.page_size(size) <= pagination.MAX_PAGE
    except BadInput:
        assert size is not None and not 1 <= size <= pagination.MAX_PAGE


# -- what the fuzzers found -------------------------------------------------------------------

ENTITIES = """query($reps: [_Any!]!) {
  _entities(representations: $reps) { __typename ... on Room { id name } ... on User { id } }
}"""


async def test_malformed_entity_representations_are_bad_input(people: People) -> None:
    """strawberry's `_entities` failed as a whole ("Unexpected error.") on a representation
    that is not an object, or has no `__typename` or `id`: now each is BAD_USER_INPUT at its
    own position and the others resolve."""
    host = people.make_user("doctor")
    room = await make_room(host)
    good = {"__typename": "Room", "id": room["id"]}
    bad = ["a string", 7, {}, {"__typename": "Room"}, {"id": room["id"]},
           {"__typename": "Message", "id": "m"}, {"__typename": "_Service", "id": "s"},
           {"__typename": "Room", "id": 5}, {"__typename": "Room", "id": room["id"], "x": 1}]
    body = await host.post(ENTITIES, {"reps": [good, *bad, {"__typename": "User",
                                                            "id": host.id}]})
    assert body["data"] is not None, body
    entities = body["data"]["_entities"]
    assert entities[0] == {"__typename": "Room", "id": room["id"], "name": room["name"]}
    assert entities[-1] == {"__typename": "User", "id": host.id}
    assert entities[1:-1] == [None] * len(bad)
    paths = {tuple(e["path"]): e["extensions"] for e in body["errors"]}
    assert set(paths) == {("_entities", n) for n in range(1, len(bad) + 1)}
    assert all(x["code"] == "BAD_USER_INPUT" for x in paths.values()), body["errors"]
    assert "Unexpected error." not in str(body)


@BOUNDED
@given(value=st.one_of(st.none(), st.integers(), st.text(max_size=10),
                       st.dictionaries(st.sampled_from(["__typename", "id", "x"]),
                                       st.one_of(st.text(max_size=10), st.integers(),
                                                 st.sampled_from(["Room", "User"])))))
def test_representations_are_checked(value: object) -> None:
    try:
        validation.representation(3, value, frozenset({"Room", "User"}))
    except BadInput as error:
        assert error.extensions == {"code": "BAD_USER_INPUT", "field": "representations[3]"}
        return
    assert isinstance(value, dict) and value["__typename"] in ("Room", "User")
    assert isinstance(value["id"], str)

"""The service as a subgraph of a main application: composition with @apollo/composition, and
queries through Hive Gateway and @apollo/gateway (tests/gateways.py starts them)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateways import Gateway, compose, mainapp_sdl
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room

ADMIT = """
mutation($ward: String!, $mrn: String!, $room: ID, $physician: ID) {
  admitPatient(ward: $ward, mrn: $mrn, careRoomId: $room, physicianId: $physician) { id }
}"""
ASSIGN = """
mutation($user: ID!, $department: String!) {
  assignDepartment(userId: $user, department: $department) { id department displayName }
}"""
ACROSS = """
query($patient: ID!, $room: ID!) {
  me { id displayName department }
  callerAuthorization
  patient(id: $patient) {
    mrn
    careRoom { name host { displayName department } linkedPatients { mrn } }
    physician { displayName role online department }
  }
  room(id: $room) { name linkedPatients { mrn physician { displayName } } }
}"""
CARE_ROOMS = """
query($ward: String!) {
  patients(ward: $ward) { edges { node { mrn careRoom { name } } } pageInfo { hasNextPage } }
}"""
PHYSICIANS = """
query($ward: String!) {
  patients(ward: $ward) { edges { node { mrn physician { displayName role } } } }
}"""


@pytest.fixture(params=["hive", "apollo_gateway"])
def gateway(request: pytest.FixtureRequest) -> Gateway:
    found: Gateway = request.getfixturevalue(request.param)
    return found


# -- composition -------------------------------------------------------------------------------

def service_sdl(live: LiveServer) -> str:
    """`_service { sdl }` as rover and composition tools ask for it: without a token."""
    response = httpx.post(f"{live.url}/graphql", json={"query": "{ _service { sdl } }"})
    sdl: str = response.json()["data"]["_service"]["sdl"]
    return sdl


def write(tmp_path: Path, name: str, sdl: str) -> str:
    path = tmp_path / f"{name}.graphql"
    path.write_text(sdl)
    return f"{name}=file:{path}"


@pytest.mark.parametrize("relay", [False, True], ids=["plain", "relay"])
def test_composes_with_a_main_app(live: LiveServer, tmp_path: Path, relay: bool) -> None:
    """The main app extends User and Room by key and owns Patient; in its Relay form it has a
    PageInfo of its own, which composes because ours is @shareable too."""
    ours = write(tmp_path, "collaboration", service_sdl(live))
    theirs = write(tmp_path, "mainapp", mainapp_sdl(relay=relay))
    assert compose(ours, theirs) == {"errors": [], "hints": []}
    if relay:  # without our @shareable, no Relay main app composes
        unshared = re.sub(r"type PageInfo @shareable", "type PageInfo", service_sdl(live))
        result = compose(write(tmp_path, "unshared", unshared), theirs)
        assert {e["code"] for e in result["errors"]} == {"INVALID_FIELD_SHARING"}
        assert len(result["errors"]) == 4  # the four PageInfo fields


EXTRAS = {
    # What the README says a main app must not define, and what it may.
    "user-fields": ("extend type User { displayName: String! online: Boolean! }",
                    {"INVALID_FIELD_SHARING"}),
    "role-values": ("enum Role { ADMIN TEACHER DOCTOR STUDENT PATIENT NURSE }\n"
                    "extend type Patient { carer: Role }", {"ENUM_VALUE_MISMATCH"}),
    "message-type": ("type Message { id: ID! subject: String! }\n"
                     "extend type Patient { lastLetter: Message }", {"INVALID_FIELD_SHARING"}),
    "user-connection": ("type UserConnection { edges: [UserEdge!]! pageInfo: PageInfo! }\n"
                        "type UserEdge { cursor: String! node: User! }\n"
                        "extend type Patient { carers: UserConnection }",
                        {"INVALID_FIELD_SHARING"}),
    "same-scalar-and-enum": ("scalar DateTime\nenum Role { ADMIN TEACHER DOCTOR STUDENT PATIENT }\n"
                             "extend type Patient { admittedAt: DateTime carer: Role }", set()),
}


@pytest.mark.parametrize("extra", list(EXTRAS))
def test_what_a_main_app_may_redefine(live: LiveServer, tmp_path: Path, extra: str) -> None:
    sdl, codes = EXTRAS[extra]
    result = compose(write(tmp_path, "collaboration", service_sdl(live)),
                     write(tmp_path, "mainapp", f"{mainapp_sdl(relay=True)}\n{sdl}\n"))
    assert {e["code"] for e in result["errors"]} == codes, result
    assert result["hints"] == []


# -- queries through the gateways --------------------------------------------------------------

async def ward_with_patient(people: People, gateway: Gateway, ward: str
                            ) -> tuple[Persona, dict[str, Any], str]:
    host = people.make_user("doctor", name="Dr Gray")
    room = await make_room(host, name="Cardiology board")
    await gateway.data(ASSIGN, host.token, user=host.id, department="Cardiology")
    admitted = await gateway.data(ADMIT, host.token, ward=ward, mrn="MRN-1", room=room["id"],
                                  physician=host.id)
    return host, room, admitted["admitPatient"]["id"]


async def test_a_query_across_both_subgraphs(gateway: Gateway, people: People) -> None:
    host, room, patient = await ward_with_patient(people, gateway, uuid.uuid4().hex)
    data = await gateway.data(ACROSS, host.token, patient=patient, room=room["id"])
    assert data["me"] == {"id": host.id, "displayName": "Dr Gray", "department": "Cardiology"}
    # The caller's header reached the main app as well as the service (`me` needs it).
    assert data["callerAuthorization"] == f"Bearer {host.token}"
    assert data["patient"] == {
        "mrn": "MRN-1",
        "careRoom": {"name": "Cardiology board",
                     "host": {"displayName": "Dr Gray", "department": "Cardiology"},
                     "linkedPatients": [{"mrn": "MRN-1"}]},
        "physician": {"displayName": "Dr Gray", "role": "DOCTOR", "online": False,
                      "department": "Cardiology"},
    }
    assert data["room"] == {"name": "Cardiology board",
                            "linkedPatients": [{"mrn": "MRN-1", "physician": {
                                "displayName": "Dr Gray"}}]}


async def test_codes_through_the_gateways(gateway: Gateway, people: People) -> None:
    host = people.make_user("doctor")
    await register(host)
    body = await gateway.post("{ me { id } }")
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    body = await gateway.post("{ rooms(first: 1000) { totalCount } }", host.token)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["serviceName"] == "collaboration"
    body = await gateway.post('mutation { deleteRoom(id: "no-such-room") }', host.token)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]


@pytest.mark.parametrize("query", [CARE_ROOMS, PHYSICIANS], ids=["rooms", "users"])
async def test_entities_in_one_cypher_query(gateway: Gateway, people: People, fresh: LiveServer,
                                            query: str) -> None:
    """The gateway asks `_entities` for all the patients' rooms (or physicians) at once; the
    service answers them with one Cypher query, however many there are."""
    host = people.make_user("doctor")
    await register(host)
    counts = {}
    for n in (1, 25):
        ward = uuid.uuid4().hex  # the main app keeps its patients for the whole session
        for i in range(n):
            room = await make_room(host, name=f"Room {i}")
            physician = people.make_user("doctor", name=f"Dr {i}")
            await register(physician)
            await gateway.data(ADMIT, host.token, ward=ward, mrn=f"MRN-{i}", room=room["id"],
                               physician=physician.id)
        before = fresh.query_count()
        data = await gateway.data(query, host.token, ward=ward)
        counts[n] = fresh.query_count() - before
        nodes = [e["node"] for e in data["patients"]["edges"]]
        assert len(nodes) == n
        assert all(node.get("careRoom") or node.get("physician") for node in nodes), nodes
    assert counts == {1: 1, 25: 1}, counts


async def test_apollo_gateway_refuses_subscriptions(apollo_gateway: Gateway, people: People
                                                    ) -> None:
    host = people.make_user("doctor")
    room = await make_room(host)
    body = await apollo_gateway.post(
        "subscription($r: ID!) { roomEvents(roomId: $r) { cursor } }", host.token,
        r=room["id"])
    (error,) = body["errors"]
    assert error["message"] == "Execution of subscriptions not supported by gateway"

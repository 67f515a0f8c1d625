"""The audit trail's guarantees beyond single operations: every root field is audited or
exempt on purpose, nothing can change or delete a record, an outage of the database delays
the trail without losing it, AUDIT_LOG_FILE streams the same records as JSON lines, and a
gateway's `_entities` reads are recorded."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import json
import re
import uuid
from pathlib import Path

import pytest

import graph_db
from audit import AuditTrail, GraphSink
from graph_db import audit as audit_db
from graph_db.audit import AuditQuery, AuditRecord, Outcome
from graph_db.driver import GraphDB
from graph_db.embedded import find_free_port
from resolvers.audit import Audited
from schema import build_schema
from tests.conftest import people_of, serving
from tests.harness import LiveServer
from tests.personas import People, make_room
from tests.processes import GraphServer
from tests.rt_helpers import SEND

# Root fields deliberately left out of the trail, and why.
EXEMPT = {
    "_service": "the schema's SDL, for gateways: no data",
    "_entities": "each Room it resolves is recorded as query._entities (room_fields.room_of)",
    "me": "the caller's own profile, read on every page load",
    "setTyping": "ephemeral, carries nothing, stored nowhere",
    "sendWebrtcSignal": "dozens per call set-up, stored nowhere; joining the call is audited",
    "reportCallStats": "measurements for the metrics, about the caller's own connection",
    "notifications": "the caller's own notifications (ids and generic titles), on every page",
    "notificationSettings": "the caller's own preferences",
}


def test_every_root_field_is_audited_or_exempt_on_purpose() -> None:
    schema = build_schema()
    names = schema.config.name_converter
    seen, missing = set(), []
    for root in (schema.query, schema.mutation):
        for field in root.__strawberry_definition__.fields:  # type: ignore[union-attr]
            name = names.from_field(field)
            seen.add(name)
            audited = any(isinstance(e, Audited) for e in field.extensions)
            assert not (audited and name in EXEMPT), name
            if not audited and name not in EXEMPT:
                missing.append(name)
    assert missing == []
    assert set(EXEMPT) <= seen


def test_no_statement_changes_or_deletes_an_audit_event() -> None:
    """Append-only: every Cypher string in graph_db/ that names AuditEvent only creates or
    reads; no GraphQL mutation touches the trail."""
    package = Path(inspect.getfile(graph_db)).parent
    statements = []
    for module in package.glob("*.py"):
        text = module.read_text()
        statements += [s for s in _string_constants(text) if "AuditEvent" in s]
        assert "AuditEvent" not in text or module.name in ("audit.py", "schema_setup.py"), module
    assert len(statements) >= 2
    for statement in statements:
        assert not re.search(r"\b(SET|DELETE|REMOVE|MERGE|DETACH)\b", statement), statement
    mutations = build_schema().mutation.__strawberry_definition__.fields  # type: ignore[union-attr]
    assert not [f.name for f in mutations if "audit" in f.name.lower()]


def _string_constants(source: str) -> list[str]:
    """The strings a module assigns to names (its Cypher), docstrings left out."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                isinstance(node.value.value, str):
            found.append(node.value.value)
        elif isinstance(node, ast.Tuple):
            found += [e.value for e in node.elts
                      if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return found


def test_a_record_is_stored_as_its_fields_in_order() -> None:
    """APPEND reads AuditRecord.values() by position: it must follow the fields."""
    full = AuditRecord(id="i", at_ms=1, action="a", outcome=Outcome.DENIED, actor_id="u",
                       actor_role="doctor", object_type="Room", object_id="o", room_id="r",
                       code="NOT_FOUND", request_id="q", client_address="c", user_agent="ua",
                       details='{"n": 1}')
    assert full.values() == [getattr(full, f.name) if f.name != "outcome" else "denied"
                             for f in dataclasses.fields(AuditRecord)]
    assert AuditRecord.from_row(full.row()) == full
    assert re.findall(r"r\[(\d+)\]", audit_db.APPEND) == [str(i) for i in range(14)]


def record(action: str, n: int) -> AuditRecord:
    return AuditRecord(id=uuid.uuid4().hex, at_ms=1_700_000_000_000 + n, action=action,
                       outcome=Outcome.ALLOWED, actor_id="tester")


async def test_an_outage_delays_the_trail_and_loses_nothing(tmp_path: Path) -> None:
    graph = GraphServer(tmp_path / "graph").start()
    env = graph.env
    # A driver pointed at nothing, as a database that is down looks to it.
    db = GraphDB.connect(f"bolt://127.0.0.1:{find_free_port()}", env["NEO4J_USER"],
                         env["NEO4J_PASSWORD"], database=env["NEO4J_DATABASE"])
    trail = AuditTrail([GraphSink(db)])
    trail.start()
    try:
        for n in range(50):
            trail.record(record("test.outage", n))
        await asyncio.sleep(3.0)  # the first write fails after about 2 s
        assert trail.pending == 50
        await db.repoint(env["NEO4J_URI"])  # the database is back
        for _ in range(200):
            if trail.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert trail.pending == 0 and trail.dropped == 0
        stored = await audit_db.page(db, AuditQuery(action="test.outage"), after=None,
                                     limit=100)
        assert sorted(r.at_ms for r in stored) == [1_700_000_000_000 + n for n in range(50)]
    finally:
        await trail.aclose()
        await db.close()
        graph.stop()


@pytest.fixture(scope="module")
def with_file(tmp_path_factory: pytest.TempPathFactory) -> object:
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    with serving(tmp_path_factory, "audit-file", audit_log_file=path) as server:
        yield server, path


async def test_audit_log_file_streams_json_lines(with_file: tuple[LiveServer, Path]) -> None:
    server, path = with_file
    async with people_of(server) as people:
        host = people.make_user("doctor")
        room = (await make_room(host))["id"]
        marker = f"secret-{uuid.uuid4().hex}"
        await host.gql(SEND, room=room, content=marker)
        await asyncio.to_thread(server.call, server.services.audit.flush())
    text = path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    mine = [r for r in lines if r["actorId"] == host.id]
    assert [r["action"] for r in mine] == ["session.start", "mutation.createRoom",
                                           "mutation.sendMessage"]
    send = mine[-1]
    assert send["roomId"] == room and send["outcome"] == "allowed"
    assert send["at"].endswith("Z") and isinstance(send["atMs"], int)
    assert set(send) == {"id", "at", "atMs", "action", "outcome", "actorId", "actorRole",
                         "objectType", "objectId", "roomId", "code", "requestId",
                         "clientAddress", "userAgent"}
    assert marker not in text and host.token not in text
    assert path.stat().st_mode & 0o777 == 0o600


ENTITIES = """
query($reps: [_Any!]!) { _entities(representations: $reps) { ... on Room { id name } } }"""


async def test_entities_reads_are_recorded(fresh: LiveServer, people: People) -> None:
    host, outsider = people.make_user("doctor"), people.make_user("student")
    room = (await make_room(host))["id"]
    data = await outsider.gql(ENTITIES, reps=[{"__typename": "Room", "id": room}])
    assert data["_entities"] == [None]
    await host.gql(ENTITIES, reps=[{"__typename": "Room", "id": room}])
    await asyncio.to_thread(fresh.call, fresh.services.audit.flush())
    stored = await asyncio.to_thread(fresh.call, audit_db.page(
        fresh.services.db, AuditQuery(room_id=room, action="query._entities"), after=None,
        limit=10))
    assert sorted((r.actor_id, r.outcome, r.code) for r in stored) == sorted([
        (outsider.id, Outcome.DENIED, "NOT_FOUND"), (host.id, Outcome.ALLOWED, None)])

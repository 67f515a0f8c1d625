"""Real clients against the live service, each driven by a Node script (tests/clients/):
Apollo Client 4 (HttpLink + persisted queries, GraphQLWsLink, InMemoryCache with possibleTypes),
urql with its default exchanges plus subscriptionExchange, and graphql-ws's own client.

The real-time scenario is the same for the three: a query, roomEvents with mutations sent through
the client arriving in order, the TCP connection dropped (the server sees 1006) and the library's
reconnect resuming after the last cursor with exactly the events it missed, then the codes of a
failed mutation, a failed query and a refused subscription as the library's error object has them.

Apollo Client with apollo-upload-client's UploadHttpLink uploads a file (multipart request spec).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLInterfaceType, build_schema

from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.node import CLIENTS, SCHEMA, Line, NodeScript, node, node_script
from tests.personas import People, Persona, make_room
from tests.processes import _die_with_us
from tests.rt_helpers import attached, send
from tests.wsclient import seq_of

LIBRARIES = ("apollo", "urql", "graphql-ws")


def config(live: LiveServer, member: Persona, room_id: str, **extra: Any) -> dict[str, Any]:
    return {"http": f"{live.url}/graphql", "ws": live.ws_url, "token": member.token,
            "room": room_id, "schema": str(SCHEMA), **extra}


def posted(line: Line) -> str | None:
    """Classifies script lines for NodeScript.collect: messages posted, mutation results."""
    if line["event"] == "room-event":
        return "posted" if line["typename"] == "MessagePosted" else None
    return "sent" if line["event"] == "sent" else None


def contents(lines: list[Line]) -> list[str]:
    return [line["content"] for line in lines]


async def ward(people: People) -> tuple[Persona, Persona, Persona, str]:
    """A host, a member and an outsider who can see the room but is not in it."""
    host, member, outsider = (people.make_user(r) for r in ("doctor", "student", "student"))
    await register(member, outsider)
    room = await make_room(host, visibility="PUBLIC", invite=[member])  # FORBIDDEN, not NOT_FOUND
    return host, member, outsider, room["id"]


async def sent_in_order(script: NodeScript) -> list[Line]:
    """The three messages the script sends, each once, in the order they were sent."""
    got = await script.collect(posted, sent=3, posted=3)
    results = [line["data"]["sendMessage"] for line in got["sent"]]
    assert [line["error"] for line in got["sent"]] == [None] * 3
    assert [r["content"] for r in results] == ["sent 1", "sent 2", "sent 3"]
    events = got["posted"]
    assert contents(events) == ["sent 1", "sent 2", "sent 3"]
    assert [e["seq"] for e in events] == [r["seq"] for r in results]
    return events


@pytest.mark.parametrize("client", LIBRARIES)
async def test_realtime_resume_and_error_codes(client: str, fresh: LiveServer, people: People,
                                               tmp_path: Path) -> None:
    host, member, outsider, rid = await ward(people)
    settings = config(fresh, member, rid, outsiderToken=outsider.token)
    async with node_script(f"{client}.mjs", "realtime", config=settings,
                           log_dir=tmp_path) as script:
        me = await script.expect("me")
        assert me["error"] is None and me["data"]["me"]["id"] == member.id
        await script.expect("subscribing")
        await attached(fresh, rid, 1)
        await script.send("go")
        before = await sent_in_order(script)

        await script.send("drop")
        await script.expect("dropped")
        await attached(fresh, rid, 0)  # the server saw the connection go
        missed = [await send(host, rid, f"missed {n}") for n in range(3)]
        await script.send("resume")
        assert (await script.expect("resubscribed"))["after"] == "cursor"
        got = await script.collect(posted, posted=3)
        assert contents(got["posted"]) == ["missed 0", "missed 1", "missed 2"]
        await attached(fresh, rid, 1)  # one subscription again, not the old one as well
        live = [await send(host, rid, f"live {n}") for n in range(2)]
        got_live = await script.collect(posted, posted=2)
        assert contents(got_live["posted"]) == ["live 0", "live 1"]
        await script.send("finish")

        events = before + got["posted"] + got_live["posted"]
        seqs = [seq_of(e["cursor"]) for e in events]
        assert seqs == sorted(set(seqs)), seqs  # in order, no duplicate
        assert [e["seq"] for e in events[3:]] == [m["seq"] for m in missed + live]
        assert script.seen("duplicate") == []

        missing = await script.expect("missing-room")
        assert missing["data"] is None and missing["error"]["codes"] == ["NOT_FOUND"]
        bad = await script.expect("bad-query")
        assert bad["error"]["codes"] == ["BAD_USER_INPUT"]
        refused = await script.expect("outsider")
        assert refused.get("codes") == ["FORBIDDEN"], refused
        await script.finish()
    await attached(fresh, rid, 0)


# What went over HTTP, (method, query text sent, APQ hash sent), for ME, ROOM, ME again, BAD_PAGE.
WIRE = {
    # Apollo's persisted-queries link: a hash-only GET first; the full query by POST when the
    # service does not know the hash yet; the repeated query is a hash-only GET that succeeds.
    "apollo": [("GET", False, True), ("POST", True, True), ("GET", False, True),
               ("POST", True, True), ("GET", False, True), ("GET", False, True),
               ("POST", True, True)],
    # urql's default fetchExchange: every query a GET with the query text in the URL.
    "urql": [("GET", True, False)] * 4,
}


@pytest.mark.parametrize("client", ["apollo", "urql"])
async def test_queries_over_http(client: str, fresh: LiveServer, people: People,
                                 tmp_path: Path) -> None:
    host, member, _, rid = await ward(people)
    settings = config(fresh, member, rid, nonce=uuid.uuid4().hex)
    async with node_script(f"{client}.mjs", "http", config=settings, log_dir=tmp_path) as script:
        me = await script.expect("me")
        assert me == {"event": "me", "error": None,
                      "data": {"me": {"__typename": "User", "id": member.id,
                                      "displayName": member.name, "role": "STUDENT"}}}
        room = (await script.expect("room"))["data"]["room"]
        assert {p["user"]["id"] for p in room["participants"]} == {host.id, member.id}
        assert (await script.expect("me-again"))["data"] == me["data"]
        bad = await script.expect("bad-query")
        assert bad["data"] is None
        assert bad["error"] == {"kind": {"apollo": "CombinedGraphQLErrors",
                                         "urql": "CombinedError"}[client],
                                "codes": ["BAD_USER_INPUT"]}
        requests = (await script.expect("requests"))["requests"]
        await script.finish()
    assert [(r["method"], r["query"], r["hash"]) for r in requests] == WIRE[client], requests
    # Both ask for the GraphQL-over-HTTP media type first, and get it (with 200: each response
    # has `data`, or is PersistedQueryNotFound, which Apollo's link reads as the cue to POST).
    assert {(r["status"], r["contentType"]) for r in requests} == {
        (200, "application/graphql-response+json")}, requests


def test_possible_types_are_generated_from_the_schema() -> None:
    """What Apollo's cache is given: every RoomEvent implementation, from schema.graphql."""
    out = subprocess.run(_die_with_us([node(), "possible-types.mjs", str(SCHEMA)]), cwd=CLIENTS,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    schema = build_schema(SCHEMA.read_text(), assume_valid_sdl=True)
    room_event = schema.get_type("RoomEvent")
    assert isinstance(room_event, GraphQLInterfaceType)
    implementations = sorted(t.name for t in schema.get_possible_types(room_event))
    assert json.loads(out)["RoomEvent"] == implementations
    assert len(implementations) >= 12


async def test_apollo_upload_client(fresh: LiveServer, people: People, tmp_path: Path) -> None:
    """apollo-upload-client's UploadHttpLink sends a File as a multipart request (with the
    preflight header); the service stores exactly those bytes, and the room lists the file."""
    _, member, _, rid = await ward(people)
    pdf = b"%PDF-1.4\n" + os.urandom(200 * 1024) + b"\n%%EOF\n"
    (path := tmp_path / "report.pdf").write_bytes(pdf)
    settings = config(fresh, member, rid, file=str(path))
    async with node_script("upload.mjs", "upload", config=settings, log_dir=tmp_path) as script:
        uploaded = await script.expect("uploaded")
        listed = await script.expect("files")
        await script.finish()
    digest = hashlib.sha256(pdf).hexdigest()
    assert uploaded["error"] is None and uploaded["sent"] == {"size": len(pdf), "sha256": digest}
    file = uploaded["data"]["uploadFile"]
    assert file == {"__typename": "SharedFile", "id": file["id"], "name": "report.pdf",
                    "contentType": "application/pdf", "size": len(pdf), "sha256": digest,
                    "status": "UNSCANNED"}  # the test service has no scanner
    assert listed["error"] is None
    assert [e["node"]["id"] for e in listed["data"]["room"]["files"]["edges"]] == [file["id"]]

"""LOG_FORMAT=json on a real `python -m app` process: every line of its output is one JSON
object (uvicorn's own lines too), each operation has a line with its request id, user,
name, type, duration and outcome, and no token, message content, variable or query string
appears anywhere in the log. The text format (the default) has the same operation line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from observability.logs import TEXT_FORMAT, JsonFormatter
from tests.conftest import SECRET, people_at
from tests.gql_helpers import register
from tests.personas import People, make_room
from tests.processes import Cluster, running_cluster
from tests.rt_helpers import EVENTS
from tests.wsclient import connect

SEND = ("mutation Send($room: ID!, $content: String!) "
        "{ sendMessage(roomId: $room, input: {content: $content}) { id } }")
FIELDS = {"request_id", "user_id", "operation", "type", "duration_ms", "outcome"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET, "LOG_FORMAT": "json",
           "LOG_LEVEL": "INFO"}
    with running_cluster(tmp_path_factory.mktemp("json-logs"), names=("json",),
                         env=env) as running:
        yield running


async def traffic(cluster: Cluster, people: People, secrets: dict[str, str]) -> None:
    """HTTP and WebSocket operations that carry `secrets` in every way a client can."""
    service = cluster.services["json"]
    host, member = people.make_user("doctor"), people.make_user("student")
    await register(member)
    room = (await make_room(host, invite=[member]))["id"]
    async with await connect(service.ws_url, member.token) as ws:
        await ws.subscribe("events", EVENTS, {"room": room})
        await ws.until("events", lambda e: e["__typename"] == "PresenceChanged")
        await host.gql(SEND, room=room, content=secrets["variable"])
        inline = json.dumps(secrets["inline"])  # content written into the document itself
        await host.gql(f'mutation Inline {{ sendMessage(roomId: "{room}", '
                       f"input: {{content: {inline}}}) {{ id }} }}")
        await ws.durable("events", 2)  # both went through the fan-out
        await ws.subscribe("me", "query WsMe { me { id } }")
        assert (await ws.next_message(id="me"))["type"] == "next"
    client = host.client
    auth = {"authorization": f"Bearer {host.token}"}
    # A GET carries its variables in the query string (uvicorn logs the request line).
    query = urllib.parse.urlencode({"query": "query Find($s: String) { users(search: $s) "
                                             "{ edges { node { id } } } }",
                                    "variables": json.dumps({"s": secrets["url"]})})
    assert (await client.get(f"/graphql?{query}", headers=auth)).status_code == 200
    # An error message quoting the input: logged by its code only.
    body = await host.post("query Bad($id: ID!) { room(id: $id) { id } }",
                           {"id": {"x": secrets["error"]}})
    assert secrets["error"] in json.dumps(body["errors"])
    assert (await host.post("query Nope { nope }"))["errors"]  # refused: does not validate
    response = await client.post("/graphql", json={"query": "query Gone { room(id: \"x\") "
                                                            "{ id } }"},
                                 headers={**auth, "x-request-id": secrets["request_id"]})
    assert response.status_code == 200
    bad = await client.post("/graphql", json={"query": "{ me { id } }"},
                            headers={"authorization": f"Bearer {secrets['token']}"})
    assert bad.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    secrets.update(host=host.id, member=member.id, host_token=host.token,
                   member_token=member.token)


def read_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text().splitlines():
        if raw.strip():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                pytest.fail(f"not JSON: {raw!r}")
            assert isinstance(line, dict), raw
            lines.append(line)
    return lines


async def test_every_line_is_json_with_the_operation_fields_and_nothing_secret(
        cluster: Cluster, tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    secrets = {"variable": f"content-var-{mark}", "inline": f"content-inline-{mark}",
               "url": f"url-var-{mark}", "error": f"error-input-{mark}",
               "token": f"not.a.token-{mark}", "request_id": f"req-{mark[:12]}"}
    async with people_at(cluster.services["json"].url, tmp_path) as people:
        await traffic(cluster, people, secrets)
    service = cluster.services["json"]
    await asyncio.to_thread(service.stop)  # SIGTERM: shutdown lines too, then nothing more
    text = service.log_path.read_text()
    for name in ("variable", "inline", "url", "error", "token", "host_token", "member_token"):
        assert secrets[name] not in text, name
    assert mark not in text  # in any other form either
    assert "authorization" not in text.lower()

    lines = read_lines(service.log_path)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        moment = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
        assert moment.utcoffset() == UTC.utcoffset(None)
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access", "collaboration.operations"} <= loggers

    ops = [line for line in lines if line["logger"] == "collaboration.operations"]
    assert all(line.keys() >= FIELDS and line["level"] == "INFO" for line in ops)
    by_name = {line["operation"]: line for line in ops}
    send = by_name["Send"]
    assert (send["type"], send["outcome"], send["user_id"], send["transport"],
            send["status"]) == ("mutation", "ok", secrets["host"], "http", 200)
    assert isinstance(send["duration_ms"], float | int) and send["duration_ms"] >= 0
    assert len(send["request_id"]) >= 8
    ws = by_name["WsMe"]
    assert (ws["type"], ws["outcome"], ws["user_id"], ws["transport"]) == (
        "query", "ok", secrets["member"], "ws")
    assert by_name["Bad"]["outcome"] == "refused"
    assert by_name["Bad"]["codes"] == ["BAD_USER_INPUT"]
    assert by_name["Nope"]["codes"] == ["GRAPHQL_VALIDATION_FAILED"]
    assert by_name["Gone"]["request_id"] == secrets["request_id"]
    assert any(line["type"] == "subscription" and line["outcome"] == "ok"
               and line["user_id"] == secrets["member"] for line in ops)
    assert any(line.get("codes") == ["UNAUTHENTICATED"] and line["user_id"] is None
               for line in ops)


def test_an_exception_is_one_field_of_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("collaboration", logging.ERROR, __file__, 1,
                                   "failed %s", ("here",), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "failed here"
    assert line["exception"].startswith("Traceback") and "RuntimeError: boom" in line["exception"]



async def test_the_operation_line_in_the_text_format(people: People,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """LOG_FORMAT=text (the default) has the same line, its fields in the message."""
    doctor = people.make_user("doctor")
    secret = f"search-{uuid.uuid4().hex}"
    with caplog.at_level(logging.INFO, logger="collaboration.operations"):
        response = await doctor.client.post(
            "/graphql", json={"query": "query Look($s: String) { users(search: $s) "
                                       "{ edges { node { id } } } }", "variables": {"s": secret}},
            headers={"authorization": f"Bearer {doctor.token}", "x-request-id": "req-text-1"})
    assert response.status_code == 200
    text = logging.Formatter(TEXT_FORMAT).format(
        next(r for r in caplog.records if r.name == "collaboration.operations"))
    assert " INFO collaboration.operations: query Look ok in " in text
    assert "request_id req-text-1" in text and f"user_id {doctor.id}" in text
    assert "status 200" in text and secret not in text and doctor.token not in text

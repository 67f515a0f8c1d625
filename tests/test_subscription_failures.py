"""A subscription that fails is never silent: the client gets a coded error (then
`complete`), the failure is logged with the request id the client sees, and the operation id
is free again. Two real failures: the graph database stopped between connect and subscribe
(SERVICE_UNAVAILABLE, also for HTTP operations and /readyz), and a room whose stored data
cannot be read (INTERNAL_SERVER_ERROR)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, make_room
from tests.processes import GraphServer
from tests.rt_helpers import EVENTS, SEND, attached
from tests.wsclient import WSClient, connect


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphServer]:
    server = GraphServer(tmp_path_factory.mktemp("outage-graph")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def outage_live(graph: GraphServer, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LiveServer]:
    env = graph.env
    settings = make_settings(Path(tmp_path_factory.mktemp("unused")),
                             neo4j_uri=env["NEO4J_URI"], neo4j_user=env["NEO4J_USER"],
                             neo4j_password=env["NEO4J_PASSWORD"],
                             neo4j_database=env["NEO4J_DATABASE"])
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture
async def crowd(outage_live: LiveServer) -> AsyncIterator[People]:
    people = People(outage_live.settings, outage_live.url)
    yield people
    await people.aclose()


async def coded_end(client: WSClient, op: str, timeout: float) -> dict[str, Any]:
    """The single error that ends `op` (asserting `next` {data: null, errors} + complete)."""
    message = await client.next_message(timeout, id=op)
    assert message["type"] == "next", message
    assert message["payload"]["data"] is None, message
    (error,) = message["payload"]["errors"]
    assert (await client.next_message(2, id=op))["type"] == "complete"
    return dict(error)


def logged_with(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if request_id in r.getMessage()]


async def test_the_database_stopped_between_connect_and_subscribe(
        outage_live: LiveServer, graph: GraphServer, crowd: People,
        caplog: pytest.LogCaptureFixture) -> None:
    host, member = crowd.make_user("doctor"), crowd.make_user("student")
    await register(host, member)
    room = (await make_room(host, invite=[member]))["id"]
    client = await connect(outage_live.ws_url, member.token)
    graph.stop()

    caplog.set_level(logging.ERROR)
    started = time.monotonic()
    await client.subscribe("s", EVENTS, {"room": room})
    error = await coded_end(client, "s", timeout=15)
    assert time.monotonic() - started < 10, "the client waited for the driver's retries"
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    request_id = error["extensions"]["requestId"]
    (record,) = logged_with(caplog, request_id)
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "unreachable" not in error["message"]  # the driver's own text stays in the log

    # The id is free again: reusing it is a new subscription (no 4409), refused the same way.
    await client.subscribe("s", EVENTS, {"room": room})
    assert (await coded_end(client, "s", timeout=15))["extensions"]["code"] == (
        "SERVICE_UNAVAILABLE")
    assert client.close_code is None
    await attached(outage_live, room, 0)
    await client.close()

    # HTTP operations say the same, and readiness says why.
    body = await member.post(SEND, {"room": room, "content": "lost?"})
    assert [e["extensions"]["code"] for e in body["errors"]] == ["SERVICE_UNAVAILABLE"]
    assert body["data"] is None
    async with httpx.AsyncClient(base_url=outage_live.url) as plain:
        assert (await plain.get("/readyz")).status_code == 503


CORRUPT = """
MATCH (r:Room {id: $id}) SET r.type = 'NO_SUCH_TYPE'
"""


async def test_an_unexpected_failure_is_internal_server_error_with_a_request_id(
        fresh: LiveServer, people: People, caplog: pytest.LogCaptureFixture) -> None:
    host, member = people.make_user("doctor"), people.make_user("student")
    await register(host, member)
    room = (await make_room(host, invite=[member]))["id"]
    fresh.call(fresh.services.db.write_rows(CORRUPT, id=room))  # unreadable as a RoomRecord
    caplog.set_level(logging.ERROR)
    async with await connect(fresh.ws_url, member.token) as client:
        await client.subscribe("s", EVENTS, {"room": room})
        error = await coded_end(client, "s", timeout=10)
        assert error == {"message": "Unexpected error.", "extensions": {
            "code": "INTERNAL_SERVER_ERROR", "requestId": error["extensions"]["requestId"]}}
        (record,) = logged_with(caplog, error["extensions"]["requestId"])
        assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
        await client.subscribe("s", EVENTS, {"room": room})  # the id is free again
        assert (await coded_end(client, "s", timeout=10))["extensions"]["code"] == (
            "INTERNAL_SERVER_ERROR")
        assert client.close_code is None

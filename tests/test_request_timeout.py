"""REQUEST_TIMEOUT: an operation that does not finish in time is stopped and answered with a
code instead of hanging. The graph database is frozen (SIGSTOP: its connections stay open and
never answer, nothing else would end the wait) under a service of its own."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import people_of, serving
from tests.harness import LiveServer
from tests.wsclient import connect

TIMEOUT = 2.0
ROOMS = "{ rooms { totalCount } }"


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, "timeout", request_timeout=TIMEOUT) as server:
        yield server


def graph_pid(server: LiveServer) -> int:
    """The embedded database's JVM: the process started with this service's data folder."""
    marker = f"server.rootPath={Path(server.settings.graph_data_dir).resolve()}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    raise AssertionError("the embedded graph database's process was not found")


@contextlib.contextmanager
def frozen(server: LiveServer) -> Iterator[None]:
    pid = graph_pid(server)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_a_hanging_operation_is_answered_with_request_timeout(slow: LiveServer) -> None:
    async with people_of(slow) as people:
        doctor = people.make_user("doctor")
        assert "rooms" in await doctor.gql(ROOMS)  # signed in: the user exists
        async with await connect(slow.ws_url, doctor.token) as ws:
            with frozen(slow):
                response = await doctor.client.post(
                    "/graphql", json={"query": ROOMS},
                    headers={"authorization": f"Bearer {doctor.token}"})
                assert response.status_code == 504, response.text
                error = response.json()["errors"][0]
                assert error["extensions"] == {"code": "REQUEST_TIMEOUT", "timeout": TIMEOUT}
                assert "data" not in response.json()
                # Over the WebSocket: `next` with the error, then `complete`.
                await ws.subscribe("q", ROOMS)
                assert await ws.error("q", timeout=TIMEOUT + 10) == ["REQUEST_TIMEOUT"]
        # Once the database answers again, so does the service.
        assert "rooms" in await doctor.gql(ROOMS)

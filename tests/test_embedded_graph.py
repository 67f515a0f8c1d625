"""The embedded ArcadeDB server, against the real JVM: persistence, the lock, no orphans."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

import neo4j
import pytest

from graph_db import embedded
from graph_db.embedded import (
    LOCK_FILE,
    LOG_FILE,
    PASSWORD_FILE,
    EmbeddedGraphServer,
    find_free_port,
)
from tests.processes import java_pids

# /proc, flock and PR_SET_PDEATHSIG are what is under test.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Started as a separate interpreter so that it can be SIGKILLed like a crashed service.
CHILD_SERVICE = """
import asyncio, sys
from pathlib import Path
import neo4j
from graph_db.embedded import EmbeddedGraphServer

async def main() -> None:
    server = EmbeddedGraphServer(Path(sys.argv[1]), heap="256m")
    await server.start()
    auth = (server.user, server.password)
    async with neo4j.AsyncGraphDatabase.driver(server.bolt_uri, auth=auth) as driver:
        await driver.execute_query("CREATE (:Note {text: 'before the crash'})",
                                   database_=server.database)
    print(server.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def lock_is_free(data_dir: Path) -> bool:
    with (data_dir / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


async def query(server: EmbeddedGraphServer, cypher: str, **params: Any) -> list[dict[str, Any]]:
    auth = (server.user, server.password)
    async with neo4j.AsyncGraphDatabase.driver(server.bolt_uri, auth=auth) as driver:
        records, _, _ = await driver.execute_query(cypher, params, database_=server.database)
        return [record.data() for record in records]


def test_find_free_port_is_bindable() -> None:
    port = find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.asyncio
async def test_data_and_password_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "graph"
    started = time.monotonic()
    async with EmbeddedGraphServer(data_dir, heap="256m") as server:
        print(f"cold start on an empty dir: {time.monotonic() - started:.2f} s")
        assert server.bolt_uri.startswith("bolt://127.0.0.1:")
        assert await query(server, "RETURN 1 AS one") == [{"one": 1}]
        await query(server, "CREATE (:Note {text: $text})", text="kept")
        first_password = server.password
        assert server.pid is not None
        assert java_pids(data_dir) == [server.pid]
        # Its own process group, so a terminal's Ctrl-C leaves it to our orderly stop().
        assert os.getpgid(server.pid) == server.pid
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert first_password.encode() not in cmdline
    assert java_pids(data_dir) == []
    await server.stop()  # idempotent
    assert stat.S_IMODE((data_dir / PASSWORD_FILE).stat().st_mode) == 0o600
    assert (data_dir / LOG_FILE).stat().st_size > 0

    async with EmbeddedGraphServer(data_dir, heap="256m") as again:
        assert again.password == first_password
        assert await query(again, "MATCH (n:Note) RETURN n.text AS text") == [{"text": "kept"}]
    assert java_pids(data_dir) == []


@pytest.mark.asyncio
async def test_lock_refuses_a_second_server_on_the_same_dir(tmp_path: Path) -> None:
    async with EmbeddedGraphServer(tmp_path, heap="256m") as first:
        second = EmbeddedGraphServer(tmp_path, heap="256m")
        with pytest.raises(RuntimeError, match="is in use by another process"):
            await second.start()
        await second.stop()  # must not touch the first server's lock or process
        assert java_pids(tmp_path) == [first.pid]
        assert await query(first, "RETURN 2 AS two") == [{"two": 2}]
    assert java_pids(tmp_path) == []


@pytest.mark.asyncio
async def test_a_jvm_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    server = EmbeddedGraphServer(tmp_path, heap="1k")  # below the JVM's minimum heap
    with pytest.raises(RuntimeError, match="exited with code") as failure:
        await server.start()
    assert "server log tail" in str(failure.value)
    assert server.password not in str(failure.value)
    assert java_pids(tmp_path) == []
    assert lock_is_free(tmp_path)


@pytest.mark.asyncio
async def test_a_start_failure_inside_a_live_jvm_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bound (not listening) socket: the JVM cannot bind Bolt, and connects are refused.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        ports = iter([taken.getsockname()[1], find_free_port()])
        monkeypatch.setattr(embedded, "find_free_port", lambda host: next(ports))
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="failed to start") as failure:
            await EmbeddedGraphServer(tmp_path, heap="256m").start()
    assert time.monotonic() - started < 20
    assert "Unable to listen for BOLT connections" in str(failure.value)
    assert java_pids(tmp_path) == []


@pytest.mark.asyncio
async def test_jvm_dies_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD_SERVICE, str(tmp_path),
        cwd=PROJECT_ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 90)  # type: ignore[union-attr]
        if not line:
            stderr = await child.stderr.read()  # type: ignore[union-attr]
            pytest.fail(f"child service failed: {stderr.decode(errors='replace')}")
        assert java_pids(tmp_path) == [int(line)]
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()

    # Gone means every JVM thread has exited: its cmdline empties (zombie leader) a few
    # milliseconds before the last thread closes the inherited lock.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (java_pids(tmp_path) or not lock_is_free(tmp_path)):
        await asyncio.sleep(0.05)
    assert java_pids(tmp_path) == [], "the JVM outlived its SIGKILLed parent"
    assert lock_is_free(tmp_path)

    # The committed write survived the crash.
    async with EmbeddedGraphServer(tmp_path, heap="256m") as server:
        rows = await query(server, "MATCH (n:Note) RETURN n.text AS text")
        assert rows == [{"text": "before the crash"}]

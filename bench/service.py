"""Servers under test as child processes pinned to core 0, and the room our subscribers use.

`Server` starts either our service (`python -m app`: ENVIRONMENT=test, a test JWT secret,
ROOM_MAX_PARTICIPANTS large, the per-user rate and connection limits out of the way: one
bench user sends far more than a production budget; `audit=False` adds AUDIT_ENABLED=false)
or the raw baseline (`python -m bench.raw_server`). Our graph
database is the embedded ArcadeDB in a temporary directory, started once here
(`graph_server`, pinned to the service's core) and handed to the service as NEO4J_URI: every
run then gets a fresh service process (a clean memory baseline) without restarting and
re-warming the JVM. `setup_room` creates one PUBLIC room and has N users join it over
GraphQL with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import httpx

from auth import issue_dev_token
from graph_db.embedded import EmbeddedGraphServer, find_free_port
from graph_db.models import Role
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SECRET = "bench-secret-0123456789abcdef0123"
MAX_PARTICIPANTS = 10_000
JOIN_CONCURRENCY = 16
TOKEN_TTL = timedelta(hours=6)
CREATE_ROOM = """mutation($input: CreateRoomInput!) { createRoom(input: $input) { id } }"""
JOIN_ROOM = """mutation($id: ID!) { joinRoom(id: $id) { status } }"""
# The bench's publisher and readers send far more than a user's production budget
# (RATE_LIMIT_REQUESTS=100 per minute, sendMessage weighing 3): limits out of the way, as the
# tests' services have them (tests/processes.py).
LIMITS_OUT_OF_THE_WAY = {"RATE_LIMIT_REQUESTS": "1000000000", "WS_MAX_CONNECTIONS": "1000000",
                         "WS_MESSAGE_RATE": "1000000", "WS_MESSAGE_BURST": "1000000"}
# /metrics needs this bearer token (whatever METRICS_TOKEN the bench was started with): the
# fan-out's load generator reads the server's GC pauses there (bench.gcpause).
METRICS_TOKEN = "bench-metrics-token-0123456789"


def raise_nofile() -> None:
    """Raises this process's open-files limit to the hard limit; children inherit it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bench_settings() -> Settings:
    """Signs the subscribers' tokens the way our service (ENVIRONMENT=test) verifies them."""
    return Settings(environment="test", jwt_secret_key=SECRET)


@dataclass
class Server:
    """One server process pinned with `taskset -c <core>`; logs go to `log_path`."""

    kind: str  # "raw" or "ours"
    work_dir: Path
    core: int = 0
    graph: EmbeddedGraphServer | None = None
    audit: bool = True  # ours: False starts it with AUDIT_ENABLED=false
    db_uri: str | None = None  # ours: instead of the graph server's own (bench.boltcount)
    port: int = field(default_factory=find_free_port)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def name(self) -> str:
        """How reports name it: "raw", "ours", "ours (audit off)"."""
        return self.kind if self.kind == "raw" or self.audit else f"{self.kind} (audit off)"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"{self.kind}{'' if self.audit else '-noaudit'}-server.log"

    def start(self) -> Server:
        raise_nofile()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.kind == "ours":
            assert self.graph is not None, "start graph_server() first"
            env.update(ENVIRONMENT="test", JWT_SECRET_KEY=SECRET,
                       NEO4J_URI=self.db_uri or self.graph.bolt_uri, NEO4J_USER=self.graph.user,
                       NEO4J_PASSWORD=self.graph.password, NEO4J_DATABASE=self.graph.database,
                       ROOM_MAX_PARTICIPANTS=str(MAX_PARTICIPANTS),
                       COLLABORATION_HOST=HOST, COLLABORATION_PORT=str(self.port),
                       LOG_LEVEL="WARNING", AUDIT_ENABLED="true" if self.audit else "false",
                       METRICS_TOKEN=METRICS_TOKEN,
                       **LIMITS_OUT_OF_THE_WAY)
            for name in ("REDIS_URL", "DEBUG", "AUDIT_LOG_FILE", "PERSISTED_QUERIES_ONLY",
                         "PERSISTED_QUERIES_MANIFEST", "OTEL_EXPORTER_OTLP_ENDPOINT",
                         "PROMETHEUS_MULTIPROC_DIR"):
                env.pop(name, None)
            cmd = [sys.executable, "-m", "app"]
        else:
            cmd = [sys.executable, "-m", "bench.raw_server", "--host", HOST,
                   "--port", str(self.port)]
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(["taskset", "-c", str(self.core), *cmd], cwd=ROOT,
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    async def wait_ready(self, timeout: float = 180.0) -> None:
        path = "/readyz" if self.kind == "ours" else "/healthz"
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} server exited; see {self.log_path}")
                try:
                    if (await client.get(path)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.3)
        raise TimeoutError(f"{self.kind} server not ready after {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
        self.proc = None


@contextlib.asynccontextmanager
async def graph_server(data_dir: Path, core: int = 0) -> AsyncIterator[EmbeddedGraphServer]:
    """The embedded ArcadeDB (a JVM), all its threads pinned to `core`."""
    async with EmbeddedGraphServer(data_dir, heap="1g") as graph:
        if graph.pid is not None:
            pin = await asyncio.create_subprocess_exec(
                "taskset", "-a", "-p", "-c", str(core), str(graph.pid),
                stdout=subprocess.DEVNULL)
            await pin.wait()
        yield graph


@dataclass
class Room:
    id: str
    host_token: str
    tokens: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"room": self.id, "host_token": self.host_token, "tokens": self.tokens}


async def gql(client: httpx.AsyncClient, token: str, query: str,
              variables: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables},
                                 headers={"authorization": f"Bearer {token}"})
    body: dict[str, Any] = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"GraphQL failed: {response.status_code} {body}")
    data: dict[str, Any] = body["data"]
    return data


def make_token(settings: Settings, role: Role, name: str) -> str:
    user_id = f"bench-{role.value}-{uuid.uuid4().hex[:10]}"
    return issue_dev_token(settings, user_id=user_id, name=name, role=role, ttl=TOKEN_TTL)


async def setup_room(server: Server, n: int, *, concurrency: int = JOIN_CONCURRENCY,
                     timeout: float = 600.0) -> Room:
    """One PUBLIC teaching room hosted by a teacher (the publisher), joined by n students."""
    settings = bench_settings()
    host = make_token(settings, Role.TEACHER, "Bench Host")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        data = await gql(client, host, CREATE_ROOM, {"input": {
            "name": "Fan-out bench", "type": "TEACHING", "visibility": "PUBLIC",
            "maxParticipants": min(MAX_PARTICIPANTS, n + 10)}})
        room_id: str = data["createRoom"]["id"]
        tokens = [make_token(settings, Role.STUDENT, f"Student {i}") for i in range(n)]
        gate = asyncio.Semaphore(concurrency)

        async def join(token: str) -> None:
            async with gate:
                result = await gql(client, token, JOIN_ROOM, {"id": room_id})
                if result["joinRoom"]["status"] != "JOINED":
                    raise RuntimeError(f"join: {result}")

        await asyncio.wait_for(asyncio.gather(*(join(t) for t in tokens)), timeout)
    return Room(room_id, host, tokens)

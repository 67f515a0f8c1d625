"""One live service per test session (real ArcadeDB over Bolt, real HTTP); data wiped
between tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from settings import Settings
from tests.harness import LiveServer
from tests.personas import People

# The federation fixtures (main-app subgraph, supergraph, gateways), started only when asked for.
pytest_plugins = ["tests.gateways", "tests.turn", "tests.clamd", "tests.smtp",
                  "tests.fake_gemini"]

SECRET = "test-secret-0123456789abcdef0123"
# The session's one service is shared by every test (and the anonymous ones all come from
# 127.0.0.1): rate and connection limits out of their way. tests/test_limits*.py run services
# of their own with the defaults.
UNLIMITED: dict[str, object] = {
    "rate_limit_requests": 1_000_000_000, "ws_max_connections": 1_000_000,
    "ws_message_rate": 1_000_000, "ws_message_burst": 1_000_000,
}


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test", "jwt_secret_key": SECRET, "graph_data_dir": data_dir,
        "file_storage_dir": data_dir / "files", "recording_dir": data_dir / "recordings",
        # What production needs for files, so that a test's environment="production" starts.
        "file_master_key": "5e" * 32, "file_scanning": "off",
        "graph_heap": "512m", **UNLIMITED, **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(tmp_path_factory: pytest.TempPathFactory, name: str,
            **overrides: object) -> Iterator[LiveServer]:
    """A second live service with other settings (and a graph of its own)."""
    server = LiveServer(make_settings(tmp_path_factory.mktemp(name), **overrides)).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def people_at(url: str, tmp_path: Path) -> AsyncIterator[People]:
    """Personas of a service running as its own process (tokens signed with SECRET)."""
    async with contextlib.aclosing(People(make_settings(tmp_path), url)) as crowd:
        yield crowd


@contextlib.asynccontextmanager
async def people_of(server: LiveServer) -> AsyncIterator[People]:
    """Personas of `server`, its data wiped first."""
    server.wipe()
    crowd = People(server.settings, server.url)
    try:
        yield crowd
    finally:
        await crowd.aclose()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(tmp_path_factory.mktemp("graph"))).start()
    yield server
    server.stop()


@pytest.fixture
def fresh(live: LiveServer) -> LiveServer:
    live.wipe()
    return live


@pytest.fixture
async def people(fresh: LiveServer) -> AsyncIterator[People]:
    crowd = People(fresh.settings, fresh.url)
    yield crowd
    await crowd.aclose()

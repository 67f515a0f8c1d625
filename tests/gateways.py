"""Federation fixtures: a toy main-application subgraph (Node, @apollo/subgraph), the supergraph
composed with @apollo/composition from both subgraphs' `_service { sdl }`, and the two gateways
(Hive Gateway, @apollo/gateway) in front of the live service. Started once per test session, on
free ports, only when a test asks for them; every process dies with the test run."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph_db.embedded import find_free_port
from tests.harness import LiveServer
from tests.node import CLIENTS, NodeServer, node
from tests.processes import _die_with_us

HIVE_BIN = CLIENTS / "node_modules" / "@graphql-hive" / "gateway" / "dist" / "bin.js"


def compose(*sources: str, out: Path | None = None) -> dict[str, list[dict[str, str]]]:
    """Composition errors and hints (code, message) of `name=url` / `name=file:path` sources;
    the supergraph goes to `out` when there are no errors."""
    config = {"out": str(out)} if out is not None else {}
    program = _die_with_us([node(), "federation/compose.mjs", *sources])
    done = subprocess.run(program, cwd=CLIENTS,
                          env={**os.environ, "CLIENT_CONFIG": json.dumps(config)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, list[dict[str, str]]] = json.loads(done.stdout)
    return result


def mainapp_sdl(*, relay: bool) -> str:
    done = subprocess.run(_die_with_us([node(), "federation/mainapp.mjs"]), cwd=CLIENTS,
                          env={**os.environ,
                               "CLIENT_CONFIG": json.dumps({"sdl": True, "relay": relay})},
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def apollo_ready(port: int) -> str:
    return f"http://127.0.0.1:{port}/?query=%7B__typename%7D"


@dataclass
class Gateway:
    name: str
    url: str

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"

    async def post(self, query: str, token: str | None = None, **variables: Any
                   ) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{self.url}/graphql", headers=headers,
                                         json={"query": query, "variables": variables})
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, token: str, **variables: Any) -> dict[str, Any]:
        body = await self.post(query, token, **variables)
        assert not body.get("errors"), body
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture(scope="session")
def federation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("federation")


@pytest.fixture(scope="session")
def mainapp(federation_dir: Path) -> Iterator[NodeServer]:
    """The main app with Relay pages of its own (so its PageInfo meets ours)."""
    port = find_free_port()
    server = NodeServer("mainapp", ["federation/mainapp.mjs"], port, apollo_ready(port),
                        federation_dir,
                        env={"CLIENT_CONFIG": json.dumps({"port": port, "relay": True})})
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def supergraph(live: LiveServer, mainapp: NodeServer, federation_dir: Path) -> Path:
    out = federation_dir / "supergraph.graphql"
    result = compose(f"collaboration={live.url}/graphql", f"mainapp={mainapp.url}/", out=out)
    assert result == {"errors": [], "hints": []}, result
    return out


@pytest.fixture(scope="session")
def hive(supergraph: Path, federation_dir: Path) -> Iterator[Gateway]:
    port = find_free_port()
    server = NodeServer(
        "hive-gateway",
        [str(HIVE_BIN), "supergraph", str(supergraph), "-c", "federation/hive.config.mjs",
         "--host", "127.0.0.1", "--port", str(port)],
        port, f"http://127.0.0.1:{port}/readiness", federation_dir,
        env={"SUPERGRAPH": str(supergraph)})
    server.start()
    yield Gateway("hive", server.url)
    server.stop()


@pytest.fixture(scope="session")
def apollo_gateway(supergraph: Path, federation_dir: Path) -> Iterator[Gateway]:
    port = find_free_port()
    config = {"supergraph": str(supergraph), "port": port}
    server = NodeServer("apollo-gateway", ["federation/apollo-gateway.mjs"], port,
                        apollo_ready(port), federation_dir,
                        env={"CLIENT_CONFIG": json.dumps(config)})
    server.start()
    yield Gateway("apollo", server.url)
    server.stop()

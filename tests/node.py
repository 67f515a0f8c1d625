"""Node scripts driven by the tests (tests/clients/): real GraphQL clients, gateways and a toy
main-application subgraph. A script reads its configuration from CLIENT_CONFIG (JSON), prints
one JSON object a line on stdout (`{"event": ...}`) and reads commands from stdin. `make test`
installs their packages (`npm ci` in tests/clients)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from tests.processes import ROOT, _die_with_us, stop_process, tail

CLIENTS = ROOT / "tests" / "clients"
SCHEMA = ROOT / "schema.graphql"
Line = dict[str, Any]


def node() -> str:
    """The node binary, once the packages are installed (else a message saying how)."""
    found = shutil.which("node")
    assert found, "node is not installed (Node >= 20 is needed for tests/clients)"
    assert (CLIENTS / "node_modules").is_dir(), "run `make test` (it runs npm ci in tests/clients)"
    return found


class ScriptFailed(AssertionError):
    pass


class NodeScript:
    """A running script; `lines` keeps everything it printed, in order."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.lines: list[Line] = []

    @classmethod
    async def start(cls, script: str, *args: str, config: dict[str, Any], log_dir: Path
                    ) -> NodeScript:
        log_path = log_dir / f"{Path(script).stem}-{'-'.join(args) or 'run'}.log"
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *_die_with_us([node(), str(CLIENTS / script), *args]), cwd=CLIENTS,
                env={**os.environ, "CLIENT_CONFIG": json.dumps(config)},
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                limit=1 << 22)
        return cls(proc, log_path)

    async def line(self, timeout: float = 20.0) -> Line:
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise ScriptFailed(f"no output within {timeout}s; so far {self.lines[-5:]}\n"
                               f"{tail(self.log_path)}") from None
        if not raw:
            raise ScriptFailed(f"the script ended (status {await self.proc.wait()}):\n"
                               f"{tail(self.log_path)}")
        found: Line = json.loads(raw)
        self.lines.append(found)
        if found["event"] == "failed":
            raise ScriptFailed(f"{found['message']}\n{tail(self.log_path)}")
        return found

    async def expect(self, event: str, timeout: float = 20.0) -> Line:
        found = await self.line(timeout)
        assert found["event"] == event, (event, found)
        return found

    async def collect(self, kind: Callable[[Line], str | None], timeout: float = 20.0,
                      **counts: int) -> dict[str, list[Line]]:
        """Reads lines until `kind` has classified `counts[k]` lines as each k; lines it
        classifies as None (or beyond the counts) are only kept in `lines`."""
        found: dict[str, list[Line]] = {k: [] for k in counts}
        deadline = time.monotonic() + timeout
        while any(len(found[k]) < n for k, n in counts.items()):
            line = await self.line(max(0.1, deadline - time.monotonic()))
            key = kind(line)
            if key in found and len(found[key]) < counts[key]:
                found[key].append(line)
        return found

    def seen(self, event: str) -> list[Line]:
        return [line for line in self.lines if line["event"] == event]

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = 20.0) -> None:
        await self.expect("done", timeout)
        assert await asyncio.wait_for(self.proc.wait(), timeout) == 0

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def node_script(script: str, *args: str, config: dict[str, Any], log_dir: Path
                      ) -> AsyncIterator[NodeScript]:
    running = await NodeScript.start(script, *args, config=config, log_dir=log_dir)
    try:
        yield running
    finally:
        await running.stop()


class NodeServer:
    """A long-lived Node process (a gateway, a subgraph) on `port`, ready once `ready_url`
    answers 200 (Apollo Server wants its CSRF header on a GET); it dies with the test process,
    and stop() always reaps it."""

    def __init__(self, name: str, args: list[str], port: int, ready_url: str, log_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.ready_url = ready_url
        self.log_path = log_dir / f"{name}.log"
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> NodeServer:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                _die_with_us([node(), *self.args]), cwd=CLIENTS, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2, headers={"apollo-require-preflight": "1"}) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n"
                                       f"{tail(self.log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.ready_url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready:\n{tail(self.log_path)}")
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)

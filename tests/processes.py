"""Real processes for multi-instance tests: the embedded graph server (on a thread of its own),
a private redis-server, and service processes (`python -m app`). Every child dies with the
test process (PR_SET_PDEATHSIG), and `Cluster` stops them all even when start-up fails."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from graph_db import die_with_parent
from graph_db.embedded import EmbeddedGraphServer, find_free_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = "/usr/bin/redis-server"
# Service processes serve tests that send far more than a user's production budget; the
# limits' own tests (tests/test_limits_cluster.py) pass theirs in `env`.
LIMITS_OUT_OF_THE_WAY = {"RATE_LIMIT_REQUESTS": "1000000000", "WS_MAX_CONNECTIONS": "1000000",
                         "WS_MESSAGE_RATE": "1000000", "WS_MESSAGE_BURST": "1000000"}


def _die_with_us(program: list[str]) -> list[str]:
    """`program`, killed by the kernel when the *thread* that forked it exits, so a crashed
    or killed test run never leaves orphans (graph_db/die_with_parent.py). Hence: Popen on
    pytest's main thread."""
    if threading.current_thread() is not threading.main_thread():
        # The signal would come as soon as a worker thread (asyncio.to_thread) retires.
        raise RuntimeError("start child processes from the main thread")
    return die_with_parent.wrapped(program)


def java_pids(data_dir: Path) -> list[int]:
    """Live processes started with this rootPath (a zombie's cmdline is empty, so not counted)."""
    marker = f"-Darcadedb.server.rootPath={data_dir.resolve()}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace`; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    proc.wait()


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class GraphServer:
    """EmbeddedGraphServer on a dedicated thread and event loop. The thread lives until stop():
    the JVM is tied to the thread that forked it."""

    def __init__(self, data_dir: Path) -> None:
        # A fixed Bolt port: restart() brings it back at the same address.
        self.server = EmbeddedGraphServer(data_dir, heap="512m", bolt_port=find_free_port())
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="graph-server",
                                        daemon=True)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> GraphServer:
        self._thread.start()
        self._call(self.server.start(), timeout=120)
        return self

    def restart(self, down_for: float) -> None:
        """Down for `down_for` seconds, then up again at the same address (as a database
        server that is restarted, or failed over, looks to its clients)."""
        self._call(self.server.stop(), timeout=60)
        time.sleep(down_for)
        self._call(self.server.start(), timeout=120)

    def stop_server(self) -> None:
        """The database stops (this object stays usable: start_server() brings it back)."""
        self._call(self.server.stop(), timeout=60)

    def start_server(self) -> None:
        self._call(self.server.start(), timeout=120)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self.server.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            if not self._thread.is_alive():
                self.loop.close()

    @property
    def env(self) -> dict[str, str]:
        return {"NEO4J_URI": self.server.bolt_uri, "NEO4J_USER": self.server.user,
                "NEO4J_PASSWORD": self.server.password,
                "NEO4J_DATABASE": self.server.database}


class RedisServer:
    """A redis-server of our own on a fixed port; kill() and start() again to simulate an
    outage (no persistence: a restart is an empty Redis, as after a crash)."""

    def __init__(self, log_path: Path, port: int | None = None, tls: Any = None) -> None:
        self.port = port or find_free_port()
        self.log_path = log_path
        self.tls = tls  # tests.certs.Certs: TLS only (rediss://), no plain port
        self.proc: subprocess.Popen[bytes] | None = None

    def _args(self) -> list[str]:
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--daemonize", "no"]
        if self.tls is None:
            return [REDIS_SERVER, "--port", str(self.port), *common]
        return [REDIS_SERVER, "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no", *common]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        assert self.proc is None or self.proc.poll() is not None, "redis-server already runs"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                _die_with_us(self._args()), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}):\n"
                                   f"{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer:\n{tail(self.log_path)}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                sock = raw
                if self.tls is not None:
                    context = ssl.create_default_context(cafile=str(self.tls.ca))
                    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, exactly like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)


class Service:
    """One `python -m app` process on a port of its own, its output in a log file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = find_free_port()
        self.log_path = log_dir / f"service-{name}.log"
        self.env = {**os.environ, **LIMITS_OUT_OF_THE_WAY, **env,
                    "COLLABORATION_HOST": "127.0.0.1",
                    "COLLABORATION_PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                _die_with_us([sys.executable, "-m", "app"]), cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service {self.name} exited ({self.proc.returncode}):\n"
                                       f"{self.log()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"service {self.name} not ready:\n{self.log()}")
                time.sleep(0.1)

    def log(self, chars: int = 4000) -> str:
        return tail(self.log_path, chars)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=15)


class Cluster:
    """Graph server + Redis + several services sharing them."""

    def __init__(self, tmp: Path, *, names: tuple[str, ...] = ("a", "b"),
                 env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.names = names
        self.extra_env = env or {}
        self.graph: GraphServer | None = None
        self.redis: RedisServer | None = None
        self.services: dict[str, Service] = {}

    def start(self) -> Cluster:
        self.redis = RedisServer(self.tmp / "redis.log").start()
        self.graph = GraphServer(self.tmp / "graph").start()
        env = {**self.graph.env, "REDIS_URL": self.redis.url, **self.extra_env}
        for name in self.names:
            self.services[name] = Service(name, env, self.tmp).start()
        for service in self.services.values():
            service.wait_ready()
        return self

    def stop(self) -> None:
        """Services first (they hold connections to the others), then Redis and the graph;
        every step runs even if an earlier one fails."""
        with contextlib.ExitStack() as stack:
            if self.graph is not None:
                stack.callback(self.graph.stop)
            if self.redis is not None:
                stack.callback(self.redis.stop)
            for service in self.services.values():
                stack.callback(service.stop)
            for service in self.services.values():  # all shut down in parallel
                if service.proc is not None and service.proc.poll() is None:
                    service.proc.terminate()

    def logs(self) -> str:
        return "\n".join(f"--- service {name} ({s.log_path}) ---\n{s.log()}"
                         for name, s in self.services.items())


@contextlib.contextmanager
def running_cluster(tmp: Path, **kw: Any) -> Iterator[Cluster]:
    cluster = Cluster(tmp, **kw)
    try:
        yield cluster.start()
    finally:
        cluster.stop()

"""Embedded graph database (used when NEO4J_URI is unset): ArcadeDB in a child JVM, over Bolt.

A child process, not a JVM inside Python (JPype): a JVM cannot be restarted in-process and
does not survive the forks of a multi-worker server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import itertools
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, Self

import neo4j
from neo4j.exceptions import AuthError, DriverError, Neo4jError

from graph_db import die_with_parent

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
RESTART_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # then every 5 s, for as long as it takes
LOG_FILE = "server.log"
PASSWORD_FILE = ".root-password"
LOCK_FILE = ".lock"
_HEAP_RE = re.compile(r"[1-9][0-9]*[kKmMgG]?")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port free on host right now (racy by nature: bind it soon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _package_dir() -> Path:
    # find_spec only locates the package; importing it could start a JVM in this process.
    spec = importlib.util.find_spec("arcadedb_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the arcadedb-embedded package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _acquire_lock(data_dir: Path) -> int:
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        msg = f"graph data directory {data_dir} is in use by another process"
        raise RuntimeError(msg) from None
    return fd


def _load_or_create_password(data_dir: Path) -> str:
    """Reuse this directory's root password: ArcadeDB keeps the first one it is given."""
    path = data_dir / PASSWORD_FILE
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        password = path.read_text(encoding="utf-8").strip()
        if password:
            return password
    if (data_dir / "config" / "server-users.jsonl").exists():
        raise RuntimeError(
            f"graph data directory {data_dir} has a root user but no {PASSWORD_FILE}; "
            "its password is unknown"
        )
    # Any text works as long as it is written before the JVM first reads it (in start()).
    password = secrets.token_urlsafe(32)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(password)
    return password


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM (the JVM's shutdown hook closes the database cleanly), SIGKILL after grace."""
    try:
        if grace > 0:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
    finally:
        # Also when cancelled: nothing else would stop it until this process dies.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    await proc.wait()


class EmbeddedGraphServer:
    """An ArcadeDB server with Bolt on a free loopback port, data kept in data_dir."""

    def __init__(
        self,
        data_dir: Path,
        *,
        heap: str = "512m",
        database: str = "collab",
        host: str = "127.0.0.1",
        bolt_port: int = 0,
    ) -> None:
        if not _HEAP_RE.fullmatch(heap):
            raise ValueError(f"heap must look like 512m or 2g, not {heap!r}")
        if not _NAME_RE.fullmatch(database):
            raise ValueError(f"invalid database name {database!r}")
        self._data_dir = Path(data_dir).resolve()
        self._heap = heap
        self._database = database
        self._host = host
        self._password: str | None = None
        self._bolt_port = bolt_port  # 0: a free one at each start
        self._fixed_port = bool(bolt_port)
        self._log_start = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._lock_fd: int | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        # Told False when the JVM dies, True once a restarted one answers; and the new URI
        # when the restarted one had to take another port.
        self.on_availability: Callable[[bool], None] = lambda available: None
        self.on_moved: Callable[[str], object] = lambda uri: None

    @property
    def bolt_uri(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"bolt://{host}:{self._bolt_port}"

    @property
    def user(self) -> str:
        return "root"

    @property
    def password(self) -> str:
        if self._password is None:
            raise RuntimeError("the graph server has not been started")
        return self._password

    @property
    def database(self) -> str:
        return self._database

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        if self._proc is not None or self._lock_fd is not None:
            raise RuntimeError("the graph server is already started")
        self._data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = _acquire_lock(self._data_dir)
        self._stopping = False
        try:
            self._password = _load_or_create_password(self._data_dir)
            await self._launch(self._lock_fd, keep_port=self._fixed_port)
            await self._wait_ready()
        except BaseException:
            await self._shutdown(grace=0)
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="graph-supervisor")

    async def stop(self) -> None:
        await self._shutdown(grace=STOP_TIMEOUT_S)

    async def _supervise(self) -> None:
        """Restarts the JVM whenever it dies (killed, out of memory, crashed) on the same
        Bolt port, so the service's driver reconnects by itself; ArcadeDB replays its WAL."""
        while True:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            log.error("embedded graph database exited (code %s); restarting it", code)
            self.on_availability(False)
            await self._restart()
            log.warning("embedded graph database restarted (Bolt on port %s)", self._bolt_port)
            self.on_availability(True)

    async def _restart(self) -> None:
        assert self._lock_fd is not None
        for attempt in itertools.count():
            port = self._bolt_port
            try:
                # The same port first; after two failures (taken meanwhile?) another one.
                await self._launch(self._lock_fd, keep_port=attempt < 2)
                await self._wait_ready()
            except Exception as exc:
                log.error("restarting the embedded graph database failed: %s", exc)
                if self._proc is not None:
                    await _terminate(self._proc, grace=0)
                await asyncio.sleep(RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)])
                continue
            if self._bolt_port != port:
                self.on_moved(self.bolt_uri)
            return

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _jvm_args(self, package: Path, http_port: int) -> list[str]:
        props = {
            "server.rootPath": str(self._data_dir),
            # A path, not the password itself: a command line is readable by every local user.
            "server.rootPasswordPath": str(self._data_dir / PASSWORD_FILE),
            # Production: WAL flushed on commit, no Studio, no LOAD CSV from local files.
            "server.mode": "production",
            "server.defaultDatabases": f"{self._database}[root]",
            "server.httpIncomingHost": self._host,
            # A range: ArcadeDB moves on if the port was taken meanwhile; nothing uses HTTP.
            "server.httpIncomingPort": f"{http_port}-{min(http_port + 20, 65535)}",
            "server.plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            "bolt.host": self._host,
            "bolt.port": str(self._bolt_port),
            "bolt.defaultDatabase": self._database,
        }
        jvm = [f"-Xmx{self._heap}", "--add-modules=jdk.incubator.vector"]
        main = ["-cp", str(package / "jars" / "*"), "com.arcadedb.server.ArcadeDBServer"]
        return jvm + [f"-Darcadedb.{key}={value}" for key, value in props.items()] + main

    async def _launch(self, lock_fd: int, *, keep_port: bool = False) -> None:
        package = _package_dir()
        java = package / "jre" / "bin" / "java"
        if not java.is_file():
            raise RuntimeError(f"no Java runtime in the arcadedb-embedded package at {java}")
        if not (keep_port and self._bolt_port):
            self._bolt_port = find_free_port(self._host)
        http_port = find_free_port(self._host)
        log_path = self._data_dir / LOG_FILE
        with log_path.open("ab") as log:
            self._log_start = log.tell()
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- graph server starting at {stamp} ---\n".encode())
            log.flush()
            # The JVM dies with this process, even if it is SIGKILLed (die_with_parent.py
            # says why that is not a preexec_fn).
            self._proc = await asyncio.create_subprocess_exec(
                *die_with_parent.wrapped([str(java), *self._jvm_args(package, http_port)]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self._data_dir,
                # Own session and group: a terminal's Ctrl-C must not kill it before our
                # orderly stop(). (start_new_session, not process_group: uvloop, uvicorn's
                # default loop, refuses process_group.)
                start_new_session=True,
                # The JVM inherits the flock, so the directory stays locked until it is gone.
                pass_fds=(lock_fd,),
            )

    async def _wait_ready(self) -> None:
        """Wait until Bolt answers a real query; a listening port is not yet a database."""
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Exception | None = None
        auth = (self.user, self.password)
        async with neo4j.AsyncGraphDatabase.driver(
            self.bolt_uri, auth=auth, connection_timeout=2.0
        ) as driver:
            while True:
                if proc.returncode is not None:
                    self._fail(f"exited with code {proc.returncode} while starting")
                # A failed start (a port taken meanwhile, say) leaves the JVM running on its
                # non-daemon threads, so its exit code would never come.
                if b'Exception in thread "main"' in self._startup_log():
                    self._fail("failed to start")
                try:
                    await asyncio.wait_for(self._ping(driver), 5.0)
                    return
                except AuthError:
                    self._fail(f"rejected the root password stored in {PASSWORD_FILE}")
                except (Neo4jError, DriverError, OSError, TimeoutError) as exc:
                    last_error = exc
                if time.monotonic() > deadline:
                    self._fail(f"did not answer within {START_TIMEOUT_S:.0f} s ({last_error!r})")
                await asyncio.sleep(0.1)

    async def _ping(self, driver: neo4j.AsyncDriver) -> None:
        # session.run, not execute_query: the latter retries for 30 s on its own.
        async with driver.session(database=self._database) as session:
            result = await session.run("RETURN 1")
            await result.consume()

    def _startup_log(self) -> bytes:
        try:
            with (self._data_dir / LOG_FILE).open("rb") as log:
                log.seek(self._log_start)
                return log.read()
        except OSError:
            return b""

    def _fail(self, reason: str) -> NoReturn:
        tail = self._startup_log()[-4000:].decode("utf-8", "replace")
        raise RuntimeError(f"embedded graph server {reason}; server log tail:\n{tail}")

    async def _shutdown(self, grace: float) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.returncode is None:
                await _terminate(proc, grace)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

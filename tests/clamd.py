"""A real ClamAV daemon (Debian's /usr/sbin/clamd) for the file tests: started from a config of
its own in a temp dir, with a signature database the fixture writes (only the EICAR test
signature, as an .ndb body signature so EICAR anywhere inside a larger file matches), offline
(no freshclam, no network), listening on a unix socket in the temp dir and on a free TCP port on
127.0.0.1, never the system service. It answers PING about 0.1 s after exec.

Use it from a test module through the session fixture `clamd_server`; tests/conftest.py lists
this module in `pytest_plugins`, so only the type needs importing:

    from tests.clamd import ClamdServer, eicar

    async def test_infected(clamd_server: ClamdServer) -> None:
        scanner = ClamdScanner(socket_path=clamd_server.socket_path)
        ...
        with clamd_server.down():  # "scanner down, then back" (restarted on leaving)
            ...

Outside pytest: `with ClamdServer(tmp_dir) as server: ...`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from graph_db.embedded import find_free_port
from tests.processes import _die_with_us, stop_process, tail

CLAMD = "/usr/sbin/clamd"
SIGNATURE = "Collab.Test.EICAR"
# clamd appends this to every signature that is not from ClamAV's own signed databases.
FOUND_NAME = f"{SIGNATURE}.UNOFFICIAL"
# MaxFileSize and StreamMaxLength both (the scanner tests go just past it): above the service's
# MAX_UPLOAD_MB default of 25, so every upload it accepts is scanned whole.
MAX_FILE_MB = 30
# sockaddr_un.sun_path is 108 bytes; pytest's basetemp can be deeper than that allows.
MAX_SOCKET_PATH = 100


def eicar() -> bytes:
    """The EICAR test file (68 bytes). Built from two halves so that this source file is not
    itself reported by a virus scanner that looks at the repository."""
    return (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-"
            + b"STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")


class ClamdServer:
    """One clamd process; `socket_path` or `host`/`port` for the scanner, `env` for a service
    process. stop()/kill() then start() brings it back on the same socket and port."""

    def __init__(self, work_dir: Path, *, max_file_mb: int = MAX_FILE_MB,
                 stream_max_mb: int = MAX_FILE_MB) -> None:
        self.work_dir = work_dir
        self.max_file_mb, self.stream_max_mb = max_file_mb, stream_max_mb
        self.db_dir = work_dir / "db"
        self.host = "127.0.0.1"
        self.port = find_free_port()
        self.socket_path = str(self._socket_dir(work_dir) / "clamd.sock")
        self.config_path = work_dir / "clamd.conf"
        self.log_path = work_dir / "clamd.log"
        self.stdout_path = work_dir / "clamd.stdout"
        self.start_seconds: float | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _socket_dir(work_dir: Path) -> Path:
        if len(str(work_dir / "clamd.sock")) <= MAX_SOCKET_PATH:
            return work_dir
        # Removed by __exit__ (when shorter, the socket lives in work_dir like the rest).
        return Path(tempfile.mkdtemp(prefix="clamd-"))

    @property
    def env(self) -> dict[str, str]:
        return {"CLAMAV_SOCKET": self.socket_path}

    @property
    def tcp_env(self) -> dict[str, str]:
        return {"CLAMAV_HOST": self.host, "CLAMAV_PORT": str(self.port)}

    def config(self) -> str:
        lines = [
            f"LocalSocket {self.socket_path}", "FixStaleSocket yes",
            f"TCPSocket {self.port}", f"TCPAddr {self.host}",
            # Only the signature written here: the system's /var/lib/clamav is empty offline,
            # and clamd refuses to start without at least one signature.
            f"DatabaseDirectory {self.db_dir}",
            "Foreground yes", f"LogFile {self.log_path}",
            f"PidFile {self.work_dir / 'clamd.pid'}", f"TemporaryDirectory {self.work_dir}",
            # Without it a file above MaxFileSize is answered "OK" without being scanned.
            "AlertExceedsMax yes",
            f"MaxFileSize {self.max_file_mb}M", f"StreamMaxLength {self.stream_max_mb}M",
            "MaxScanSize 100M",
            # The tests' database never changes, and with the check thread clamd takes 1.3 s to
            # exit on SIGTERM; without it, a few ms.
            "SelfCheck 0",
        ]
        # No `User`: clamd then keeps the uid it was started with (root in CI, which needs no
        # drop to read this dir; Debian's own config says `User clamav`, which could not).
        return "\n".join(lines) + "\n"

    def _write_files(self) -> None:
        self.db_dir.mkdir(parents=True, exist_ok=True)
        # .ndb: Name:TargetType:Offset:HexSignature; type 0 = any file, offset * = anywhere.
        # (An .hdb would match only a file that *is* EICAR, by its MD5.)
        (self.db_dir / "collab-test.ndb").write_text(
            f"{SIGNATURE}:0:*:{eicar().hex()}\n", encoding="ascii")
        self.config_path.write_text(self.config(), encoding="utf-8")

    def start(self, timeout: float = 10.0) -> ClamdServer:
        assert not self.running, "clamd already runs"
        self._write_files()
        began = time.monotonic()
        with self.stdout_path.open("ab") as out:
            self.proc = subprocess.Popen(
                _die_with_us([CLAMD, "-c", str(self.config_path)]),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.work_dir)
        try:
            self._wait_answering(timeout)
        except BaseException:
            self.kill()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _wait_answering(self, timeout: float) -> None:
        """Until both listeners answer PING (the unix socket is bound after the TCP one)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not (self.ping_unix() and self.ping_tcp()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited ({self.proc.returncode}):\n"
                                   f"{tail(self.stdout_path)}\n{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"clamd did not answer PING:\n{tail(self.log_path)}")
            time.sleep(0.02)

    def ping_unix(self) -> bool:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(0.5)
            sock.connect(self.socket_path)
            return _ping(sock)
        return False

    def ping_tcp(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(
                (self.host, self.port), timeout=0.5) as sock:
            return _ping(sock)
        return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM: clamd removes its socket file and exits (within a few ms)."""
        if self.proc is not None:
            stop_process(self.proc, grace=10)

    def kill(self) -> None:
        """SIGKILL, like a crash: the socket file stays behind (refused connections), which
        `FixStaleSocket` clears at the next start."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    @contextlib.contextmanager
    def down(self, *, crash: bool = True) -> Iterator[None]:
        """clamd not running inside the block (killed, or stopped when `crash` is false),
        running again after it, even when the block fails."""
        if crash:
            self.kill()
        else:
            self.stop()
        try:
            yield
        finally:
            self.start()

    def log_text(self) -> str:
        return tail(self.log_path, 100_000)

    def __enter__(self) -> ClamdServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        socket_dir = Path(self.socket_path).parent
        if socket_dir != self.work_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)


def _ping(sock: socket.socket) -> bool:
    sock.sendall(b"zPING\0")
    return sock.recv(16).startswith(b"PONG")


def clamd_missing() -> bool:
    return not os.access(CLAMD, os.X_OK)


@pytest.fixture(scope="session")
def clamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    """A clamd shared by the session. A test that takes it down uses `down()`, which brings
    it back for the next test."""
    if clamd_missing():
        pytest.fail(f"{CLAMD} is missing: run `make test-tools` (apt package clamav-daemon)")
    with ClamdServer(tmp_path_factory.mktemp("clamd")) as server:
        yield server

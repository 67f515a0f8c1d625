"""A real coturn (Debian's /usr/bin/turnserver) for call tests: started from a config of its
own in a temp dir, on free ports, loopback only, with TURN REST credentials
(`use-auth-secret`), never the system unit. Every test session gets one, shared, started only
when a test asks for it.

Use it from a test module through the session fixture `turn_server`; tests/conftest.py
lists this module in `pytest_plugins`, so only the type needs importing (elsewhere, import
the fixture too: `from tests.turn import turn_server  # noqa: F401`):

    from tests.turn import TurnServer

    def test_relay(turn_server: TurnServer) -> None:
        username, credential = rtc.turn.mint(turn_server.secret, "opaque", expiry)
        RTCIceServer(urls=turn_server.url, username=username, credential=credential)

Outside pytest: `with TurnServer(tmp_dir) as server: ...`. Recognise your allocations in
`server.log_text()` by the username: coturn logs it on every request.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.processes import _die_with_us, stop_process, tail

TURNSERVER = "/usr/bin/turnserver"
REALM = "calls.test"
# STUN Binding Request (RFC 5389 §6): type, length 0, magic cookie, then a transaction id.
MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST, BINDING_SUCCESS = 0x0001, 0x0101


def free_udp_tcp_port(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port free for both UDP and TCP right now: coturn listens on both with one number."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def relay_port_range(width: int = 200) -> tuple[int, int]:
    """A random block below the kernel's ephemeral range (32768+ here), so the ports our own
    sockets get never collide with it; coturn skips a relay port that is busy anyway, and a
    random block keeps parallel sessions apart."""
    low = random.randrange(20000, 32000 - width)
    return low, low + width - 1


def stun_binding_ok(port: int, timeout: float = 0.2) -> bool:
    """Whether a STUN Binding Request over UDP gets a success answer (needs no credentials)."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", BINDING_REQUEST, 0, MAGIC_COOKIE) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, ("127.0.0.1", port))
            answer = sock.recv(2048)
        except OSError:  # timeout, or ICMP port unreachable before coturn listens
            return False
    return (len(answer) >= 20 and struct.unpack("!H", answer[:2])[0] == BINDING_SUCCESS
            and answer[8:20] == transaction)


def tcp_accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


class TurnServer:
    """One turnserver process; `url` for RTCIceServer, `secret` to mint credentials."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = free_udp_tcp_port()
        self.min_port, self.max_port = relay_port_range()
        self.secret = secrets.token_hex(16)
        self.config_path = work_dir / "turnserver.conf"
        self.log_path = work_dir / "turnserver.log"
        self.stdout_path = work_dir / "turnserver.stdout"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = [
            "listening-ip=127.0.0.1", "relay-ip=127.0.0.1", f"listening-port={self.port}",
            f"min-port={self.min_port}", f"max-port={self.max_port}", f"realm={REALM}",
            "use-auth-secret", f"static-auth-secret={self.secret}",
            "no-tls", "no-dtls", "no-cli", "fingerprint",
            # Both peers' relays are on 127.0.0.1: without this coturn refuses them as peers
            # (CHANNEL_BIND 403 Forbidden IP) and ICE never connects. Tests only.
            "allow-loopback-peers",
            # RFC 5780 discovery would also listen on port+1, which nobody checked is free.
            "no-rfc5780",
            f"log-file={self.log_path}", "simple-log",
            # Without it coturn logs errors only; tests look for each request's outcome
            # ("ALLOCATE processed, success" / "error 401") by username.
            "verbose",
            # Its defaults are under /var (pid file, SQLite user db): keep everything here.
            f"pidfile={self.work_dir / 'turnserver.pid'}",
            f"userdb={self.work_dir / 'turndb'}",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> TurnServer:
        self.config_path.write_text(self.config(), encoding="utf-8")
        with self.stdout_path.open("ab") as out:
            self.proc = subprocess.Popen(
                _die_with_us([TURNSERVER, "-c", str(self.config_path)]),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.work_dir)
        try:
            self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, timeout: float) -> None:
        """Until a STUN binding over UDP is answered and TCP accepts (both transports are
        handed out in `rtcConfiguration`)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not (stun_binding_ok(self.port) and tcp_accepts(self.port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited ({self.proc.returncode}):\n"
                                   f"{tail(self.stdout_path)}\n{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"turnserver not listening on {self.port}:\n"
                                   f"{tail(self.log_path)}")
            time.sleep(0.02)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_line(self, *needles: str, timeout: float = 3.0) -> str:
        """The first log line containing all `needles`, waited for (coturn writes a request's
        line after answering it); the log's tail in the assertion message when none comes."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            for line in text.splitlines():
                if all(needle in line for needle in needles):
                    return line
            assert time.monotonic() < deadline, f"no line with {needles} in:\n{text[-4000:]}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)

    def __enter__(self) -> TurnServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def turnserver_missing() -> bool:
    return not os.access(TURNSERVER, os.X_OK)


@pytest.fixture(scope="session")
def turn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnServer]:
    """A coturn shared by the session (tests tell their allocations apart by username)."""
    if turnserver_missing():
        pytest.fail(f"{TURNSERVER} is missing: run `make test-tools` (apt package coturn)")
    with TurnServer(tmp_path_factory.mktemp("turn")) as server:
        yield server

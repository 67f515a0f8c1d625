"""Virus scanning of uploaded files through ClamAV's daemon (clamd).

`ClamdScanner` is a small asyncio client of clamd's own protocol (no third-party library):
`zINSTREAM` streams the file in length-prefixed 1 MiB chunks read from disk one at a time, so a
large upload is never held whole in memory; `zPING` checks that the daemon answers.

Fail closed: whenever clamd gives no verdict (unreachable, too slow, or an `ERROR` answer such as
"INSTREAM size limit exceeded") the scanner raises `ScannerUnavailable`, and the caller keeps the
file `PENDING_SCAN` (never downloadable) until a later scan gives one. A file above clamd's
`MaxFileSize` comes back as `Heuristics.Limits.Exceeded.* FOUND` when clamd runs with
`AlertExceedsMax yes` (without it clamd answers `OK` for a file it did not scan: configure it),
which is a "not clean" result like any other signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

CHUNK_SIZE = 1 << 20
# The answer is one short line ("stream: <signature> FOUND"); anything longer is not clamd.
MAX_REPLY = 64 * 1024
LIMITS_EXCEEDED_PREFIX = "Heuristics.Limits.Exceeded"


class ScannerUnavailable(Exception):
    """No verdict: clamd unreachable, timed out, or answered an error. The file is not clean."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    """clamd's verdict: clean, or the name of what it found (`<name> FOUND`)."""

    clean: bool
    signature: str | None = None

    @property
    def limits_exceeded(self) -> bool:
        """clamd skipped (part of) the file because of a size or recursion limit: not clean,
        but not known to be infected either (callers may word the outcome differently)."""
        return self.signature is not None and self.signature.startswith(LIMITS_EXCEEDED_PREFIX)


class Scanner(Protocol):
    """What the upload path needs: a verdict on a file on disk (or ScannerUnavailable), and
    whether the scanner answers (readiness, rescans of PENDING_SCAN files)."""

    async def scan(self, path: Path) -> ScanResult: ...

    async def ping(self) -> bool: ...


def parse_reply(raw: bytes) -> ScanResult:
    """clamd's answer to zINSTREAM: `stream: OK`, `stream: <sig> FOUND`, or `<why> ERROR`."""
    reply = raw.rstrip(b"\0").decode("utf-8", errors="replace").strip()
    if reply.endswith(" ERROR"):
        raise ScannerUnavailable(f"clamd: {reply}")
    body = reply.removeprefix("stream:").strip()
    if body == "OK":
        return ScanResult(clean=True)
    if body.endswith(" FOUND") and len(body) > len(" FOUND"):
        return ScanResult(clean=False, signature=body.removesuffix(" FOUND").strip())
    raise ScannerUnavailable(f"clamd: unexpected answer {reply[:200]!r}")


class ClamdScanner:
    """clamd over a unix socket (`socket_path`) or TCP (`host`, `port`); a connection per call.
    `timeout` bounds a whole exchange (connect, send, verdict), so a hung daemon delays an
    upload by at most that."""

    def __init__(self, socket_path: str | None = None, host: str | None = None,
                 port: int | None = None, timeout: float = 30.0) -> None:
        if (socket_path is None) == (host is None and port is None):
            raise ValueError("give either socket_path or host and port")
        if socket_path is None and (host is None or port is None):
            raise ValueError("TCP needs both host and port")
        self.socket_path = socket_path
        self.host = host
        self.port = port
        self.timeout = timeout

    def __repr__(self) -> str:
        where = self.socket_path or f"{self.host}:{self.port}"
        return f"ClamdScanner({where}, timeout={self.timeout})"

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                with await self._connect() as sock:
                    loop = asyncio.get_running_loop()
                    await loop.sock_sendall(sock, b"zPING\0")
                    return (await _read_reply(sock)).rstrip(b"\0").strip() == b"PONG"
        except (OSError, TimeoutError, ScannerUnavailable):
            return False

    async def scan(self, path: Path) -> ScanResult:
        # Opened before connecting and outside the handlers below: a missing or unreadable
        # file is the caller's error, not the scanner's.
        source = await asyncio.to_thread(_open_binary, path)
        try:
            async with asyncio.timeout(self.timeout):
                return parse_reply(await self._instream(source))
        except TimeoutError as exc:
            raise ScannerUnavailable(f"clamd gave no answer within {self.timeout} s") from exc
        except OSError as exc:
            raise ScannerUnavailable(f"{self!r}: {exc!r}") from exc
        finally:
            await asyncio.to_thread(source.close)

    async def _instream(self, source: BinaryIO) -> bytes:
        """The command, the chunks, then the zero-length terminator; the answer. clamd answers
        an over-long stream with an ERROR and closes at once, so a failed send is followed by
        reading that answer (it says why) before giving up. Raw sockets rather than streams
        for this: an asyncio transport drops what it had not read yet when a write fails."""
        loop = asyncio.get_running_loop()
        with await self._connect() as sock:
            try:
                await loop.sock_sendall(sock, b"zINSTREAM\0")
                while chunk := await asyncio.to_thread(source.read, CHUNK_SIZE):
                    await loop.sock_sendall(sock, struct.pack("!I", len(chunk)) + chunk)
                await loop.sock_sendall(sock, struct.pack("!I", 0))
            except (BrokenPipeError, ConnectionResetError) as exc:
                with contextlib.suppress(OSError):
                    parse_reply(await _read_reply(sock))  # raises with clamd's reason
                raise ScannerUnavailable(f"clamd closed the stream: {exc!r}") from exc
            return await _read_reply(sock)

    async def _connect(self) -> socket.socket:
        """A connected non-blocking socket (closed by the caller's `with`, also when the
        timeout cancels: nothing waits to flush)."""
        loop = asyncio.get_running_loop()
        if self.socket_path is not None:
            return await _connected(socket.AF_UNIX, self.socket_path)
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"no address for {self.host}")
        for family, _, _, _, address in infos:
            try:
                return await _connected(family, address)
            except OSError as exc:
                error = exc
        raise error


async def _connected(family: int, address: str | tuple[Any, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _read_reply(sock: socket.socket) -> bytes:
    """Up to clamd's NUL terminator (z-commands); an answer cut short is no answer."""
    loop = asyncio.get_running_loop()
    reply = b""
    while not reply.endswith(b"\0"):
        if len(reply) > MAX_REPLY:
            raise ScannerUnavailable("clamd: answer too long")
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise ScannerUnavailable(f"clamd closed the connection after {reply[:200]!r}")
        reply += data
    return reply


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")

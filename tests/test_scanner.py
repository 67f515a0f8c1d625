"""files/scanner.py against a real clamd (tests/clamd.py): verdicts over both transports, EICAR
alone and inside a larger file, clamd's size limits, and every way of getting no verdict
(down, crashed, hung), which must raise ScannerUnavailable so that uploads fail closed."""

from __future__ import annotations

import os
import socket
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from files.scanner import ClamdScanner, ScannerUnavailable, ScanResult, parse_reply
from tests.clamd import FOUND_NAME, MAX_FILE_MB, ClamdServer, eicar

MB = 1 << 20


def scanner_for(server: ClamdServer, transport: str, timeout: float = 5.0) -> ClamdScanner:
    if transport == "unix":
        return ClamdScanner(socket_path=server.socket_path, timeout=timeout)
    return ClamdScanner(host=server.host, port=server.port, timeout=timeout)


def write_random(path: Path, size: int, insert_at: int | None = None) -> Path:
    """`size` random bytes, with EICAR spliced in at `insert_at` if given."""
    data = os.urandom(size)
    if insert_at is not None:
        data = data[:insert_at] + eicar() + data[insert_at:]
    path.write_bytes(data)
    return path


@pytest.fixture(params=["unix", "tcp"])
def scanner(request: pytest.FixtureRequest, clamd_server: ClamdServer) -> ClamdScanner:
    return scanner_for(clamd_server, request.param)


async def test_clean_file_is_clean(scanner: ClamdScanner, tmp_path: Path) -> None:
    path = tmp_path / "report.txt"
    path.write_text("Discharge summary: no findings.\n", encoding="utf-8")
    assert await scanner.ping()
    assert await scanner.scan(path) == ScanResult(clean=True, signature=None)


async def test_eicar_alone_is_found(scanner: ClamdScanner, tmp_path: Path) -> None:
    path = tmp_path / "eicar.com"
    path.write_bytes(eicar())
    result = await scanner.scan(path)
    assert result == ScanResult(clean=False, signature=FOUND_NAME)
    assert not result.limits_exceeded


async def test_eicar_in_the_middle_of_5_mb_is_found(clamd_server: ClamdServer,
                                                    tmp_path: Path) -> None:
    path = write_random(tmp_path / "scan.dcm", 5 * MB, insert_at=5 * MB // 2 + 12345)
    result = await scanner_for(clamd_server, "unix").scan(path)
    assert result == ScanResult(clean=False, signature=FOUND_NAME)


async def test_empty_file_is_clean(clamd_server: ClamdServer, tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.touch()
    assert (await scanner_for(clamd_server, "unix").scan(path)).clean


async def test_file_is_streamed_not_read_whole(clamd_server: ClamdServer,
                                               tmp_path: Path) -> None:
    path = write_random(tmp_path / "big.mp4", 20 * MB)
    tracemalloc.start()
    try:
        result = await scanner_for(clamd_server, "unix").scan(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.clean
    assert peak < 4 * MB, f"peak {peak / MB:.1f} MiB while scanning 20 MiB"


async def test_over_stream_max_length_raises(scanner: ClamdScanner, tmp_path: Path) -> None:
    """Measured: a stream over StreamMaxLength is answered "INSTREAM size limit exceeded.
    ERROR" (clamd closes while the client is still sending), so no verdict: fail closed."""
    path = write_random(tmp_path / "huge.bin", (MAX_FILE_MB + 1) * MB)
    with pytest.raises(ScannerUnavailable, match="size limit exceeded"):
        await scanner.scan(path)


async def test_over_max_file_size_is_not_clean(tmp_path: Path) -> None:
    """With MaxFileSize below StreamMaxLength a larger file is accepted but not scanned:
    `AlertExceedsMax yes` turns that into a FOUND (without it clamd says OK)."""
    with ClamdServer(tmp_path, max_file_mb=1, stream_max_mb=4) as server:
        path = write_random(tmp_path / "large.pdf", 2 * MB, insert_at=2 * MB)
        result = await scanner_for(server, "unix").scan(path)
    assert not result.clean
    assert result.limits_exceeded
    assert result.signature == "Heuristics.Limits.Exceeded.MaxFileSize"


@pytest.mark.parametrize("crash", [True, False], ids=["killed", "stopped"])
async def test_down_then_back(clamd_server: ClamdServer, tmp_path: Path, crash: bool) -> None:
    path = tmp_path / "eicar.txt"
    path.write_bytes(eicar())
    scanners = [scanner_for(clamd_server, transport) for transport in ("unix", "tcp")]
    with clamd_server.down(crash=crash):
        for scanner in scanners:
            began = time.monotonic()
            with pytest.raises(ScannerUnavailable):
                await scanner.scan(path)
            assert not await scanner.ping()
            assert time.monotonic() - began < 1.0
    for scanner in scanners:
        assert await scanner.ping()
        assert (await scanner.scan(path)).signature == FOUND_NAME


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A TCP listener that never accepts: connecting succeeds (the kernel's backlog), and
    then nothing is ever read or answered, like a wedged daemon."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("size", [100, 5 * MB], ids=["small", "5MB"])
async def test_hung_server_times_out(hung_port: int, tmp_path: Path, size: int) -> None:
    """Small: everything is sent and the answer never comes. 5 MB: the socket's buffers fill
    and sending blocks. Both end at the timeout, and the connection is aborted, not left
    waiting to flush."""
    path = write_random(tmp_path / "file.bin", size)
    scanner = ClamdScanner(host="127.0.0.1", port=hung_port, timeout=0.5)
    began = time.monotonic()
    with pytest.raises(ScannerUnavailable, match="no answer within"):
        await scanner.scan(path)
    assert 0.45 < time.monotonic() - began < 1.5
    assert not await scanner.ping()


async def test_missing_file_is_the_callers_error(clamd_server: ClamdServer,
                                                 tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await scanner_for(clamd_server, "unix").scan(tmp_path / "absent")


@pytest.mark.parametrize(("reply", "expected"), [
    (b"stream: OK\0", ScanResult(clean=True)),
    (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", ScanResult(clean=False,
                                                        signature="Win.Test.EICAR_HDB-1")),
    (b"INSTREAM size limit exceeded. ERROR\0", None),
    (b"stream: lstat() failed: No such file. ERROR\0", None),
    (b"stream: FOUND\0", None),
    (b"UNKNOWN COMMAND\0", None),
    (b"\0", None),
])
def test_parse_reply(reply: bytes, expected: ScanResult | None) -> None:
    if expected is None:
        with pytest.raises(ScannerUnavailable):
            parse_reply(reply)
    else:
        assert parse_reply(reply) == expected


def test_needs_one_address() -> None:
    for kwargs in ({}, {"socket_path": "/x", "host": "h", "port": 1}, {"host": "h"},
                   {"port": 3310}):
        with pytest.raises(ValueError, match=r"socket_path|host"):
            ClamdScanner(**kwargs)

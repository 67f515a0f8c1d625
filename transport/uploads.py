"""File uploads over POST multipart/form-data, by the GraphQL multipart request spec
(github.com/jaydenseric/graphql-multipart-request-spec): an `operations` part (the request's
JSON, a null where each file goes), a `map` part (`{"0": ["variables.file"]}`), then the files.

- CSRF: a multipart POST is a CORS "simple request" a page on any site can send with the
  user's cookies. It is refused unless it carries a header that makes a browser ask first
  (Apollo-Require-Preflight, GraphQL-Require-Preflight or X-Requested-With).
- The body is streamed (python-multipart's parser, fed chunk by chunk): each file goes to a
  temporary file of its own (0600, in the caller's scratch directory), never whole in memory.
- Sizes: a file over `max_upload_bytes`, a body over `max_upload_bytes + max_body_bytes`, or
  `operations`/`map` over `max_body_bytes` is 413 PAYLOAD_TOO_LARGE, by Content-Length before
  reading anything, else as soon as the limit is passed. Nothing written is left behind.
- A refusal closes the connection. One that comes part-way through the body first drops what
  the client still sends for up to LINGER_S: otherwise a client still sending would see the
  connection reset instead of the answer.
- Each mapped variable becomes an UploadedFile. The caller deletes the temporary files once
  the request is answered (`discard`); a resolver that keeps one moves it away first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from resolvers.errors import ServiceError
from transport.errors import HTTPProblem, PayloadTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MULTIPART = "multipart/form-data"
# Any one of them, non-empty: none is a CORS-safelisted header, so a browser sends none
# cross-origin without a preflight this service's CORS policy answers first.
PREFLIGHT_HEADERS = ("apollo-require-preflight", "graphql-require-preflight",
                     "x-requested-with")
MAX_FILES = 10
# How long a body refused part-way is still read (and dropped) so that its sender gets the
# answer: Apache's lingering close waits 2 s too.
LINGER_S = 2.0
OPERATIONS, MAP = "operations", "map"


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_upload_bytes: int  # one file (MAX_UPLOAD_MB)
    scratch_dir: Path  # temporary files; on the storage's filesystem, so they move, not copy
    max_files: int = MAX_FILES


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """What the `Upload` scalar carries to a resolver: a file received whole, on disk."""

    filename: str  # as sent: the service sanitises it before it is shown or stored
    content_type: str  # as declared by the client: not to be trusted
    path: Path  # deleted once the request is answered, unless the resolver moved it
    size: int


class FileTooLarge(PayloadTooLarge):
    """One uploaded file over MAX_UPLOAD_MB (same code as any body over its limit)."""

    def __init__(self, max_bytes: int) -> None:
        ServiceError.__init__(self, f"an uploaded file is larger than {max_bytes} bytes",
                              maxBytes=max_bytes)


def is_multipart(request: Request) -> bool:
    media = (request.headers.get("content-type") or "").partition(";")[0]
    return media.strip().lower() == MULTIPART


async def read_multipart(request: Request, max_body_bytes: int, limits: UploadLimits
                         ) -> tuple[dict[str, Any], list[Path]]:
    """The request's parameters, each mapped variable an UploadedFile, and the temporary
    files written. On any refusal (HTTPProblem) or failure none of those files is left."""
    limit = limits.max_upload_bytes + max_body_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:  # answered at once, none of the body read
        raise too_large(PayloadTooLarge(limit))
    chunks = request.stream()
    form: _Form | None = None
    try:
        _require_preflight(request)
        form = _Form(_boundary(request), max_body_bytes, limits)
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise too_large(PayloadTooLarge(limit))
            form.write(chunk)
        return form.finish(), form.temp_files
    except BaseException as exc:  # a refusal, a client gone, a cancellation: no leftovers
        if form is not None:
            form.close()
            discard(form.temp_files)
        if isinstance(exc, HTTPProblem):
            # Never kept alive: uvicorn would read the rest of the body, however long.
            exc.headers["connection"] = "close"
            await _linger(chunks)
        raise


def discard(paths: Iterable[Path]) -> None:
    """Deletes temporary files; one a resolver moved away is simply gone already."""
    for path in paths:
        path.unlink(missing_ok=True)


def too_large(error: PayloadTooLarge) -> HTTPProblem:
    # The connection is closed after the answer: the rest of the body is not read (beyond
    # _linger's short while).
    return HTTPProblem(413, headers={"connection": "close"}, error=error)


async def _linger(chunks: AsyncIterator[bytes]) -> None:
    """Reads and drops what the client still sends, for LINGER_S at most, before a refusal
    is answered. uvicorn closes the connection right after a `connection: close` answer, and
    a socket closed with data unread is reset: a client still sending then gets the reset,
    not the answer (httpx: ReadError)."""
    with contextlib.suppress(TimeoutError, ClientDisconnect):
        async with asyncio.timeout(LINGER_S):
            async for _ in chunks:
                pass


def _require_preflight(request: Request) -> None:
    if not any(request.headers.get(name, "").strip() for name in PREFLIGHT_HEADERS):
        raise HTTPProblem(400, "multipart requests must carry a non-empty "
                               "`Apollo-Require-Preflight` (or `GraphQL-Require-Preflight`, "
                               "or `X-Requested-With`) header: it protects against CSRF")


def _boundary(request: Request) -> bytes:
    _, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPProblem(400, "the multipart/form-data content type names no boundary")
    return boundary


@dataclass
class _File:
    """The file part being received."""

    key: str  # its name in the map
    filename: str
    content_type: str
    path: Path
    out: BinaryIO
    size: int = 0


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_name: bytes = b""
    header_value: bytes = b""


class _Form:
    """The spec's parts in their order, from python-multipart's callbacks: `operations` and
    `map` kept (JSON, small), then each file part written to a temporary file as it comes."""

    def __init__(self, boundary: bytes, max_field_bytes: int, limits: UploadLimits) -> None:
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end}
        try:
            self.parser = MultipartParser(boundary, callbacks)
        except FormParserError:
            raise HTTPProblem(400, "the multipart boundary is too long") from None
        self.max_field_bytes, self.limits = max_field_bytes, limits
        self.part = _Part()
        self.parts = 0  # parts begun so far
        self.field: bytearray | None = None  # operations or map, while it comes
        self.file: _File | None = None
        self.operations: dict[str, Any] | None = None
        self.slots: dict[str, list[tuple[Any, str | int]]] = {}  # map key -> its places
        self.received: set[str] = set()
        self.temp_files: list[Path] = []
        self.ended = False

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError:
            raise HTTPProblem(400, "the multipart/form-data body is malformed") from None

    def finish(self) -> dict[str, Any]:
        if not self.ended:
            raise HTTPProblem(400, "the multipart body ends before its closing boundary")
        if self.operations is None or self.parts < 2:
            raise HTTPProblem(400, "a multipart request sends `operations`, then `map`, "
                                   "then its files")
        missing = sorted(set(self.slots) - self.received)
        if missing:
            raise HTTPProblem(400, f"the files {missing} of the map were not sent")
        return self.operations

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.out.close()
            self.file = None

    # -- python-multipart's callbacks (an HTTPProblem raised here ends the parsing) --------

    def _part_begin(self) -> None:
        self.part = _Part()
        self.parts += 1

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value += data[start:end]

    def _header_end(self) -> None:
        self.part.headers[self.part.header_name.strip().lower()] = self.part.header_value
        self.part.header_name = self.part.header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition"))
        name = _text(options.get(b"name", b""))
        expected = OPERATIONS if self.parts == 1 else MAP if self.parts == 2 else None
        if expected is not None:
            if name != expected:
                raise HTTPProblem(400, f"part {self.parts} of a multipart request must be "
                                       f"`{expected}` (then `map`, then the files)")
            self.field = bytearray()
            return
        if name not in self.slots:
            raise HTTPProblem(400, f"the file part `{name}` is not named in the map")
        if name in self.received:
            raise HTTPProblem(400, f"the file part `{name}` is sent twice")
        self.received.add(name)
        self.file = self._open(name, _text(options.get(b"filename", b"")))

    def _open(self, key: str, filename: str) -> _File:
        fd, name = tempfile.mkstemp(dir=self.limits.scratch_dir, prefix="upload-")  # 0600
        path = Path(name)
        self.temp_files.append(path)
        declared = _text(self.part.headers.get(b"content-type", b"")).strip()
        return _File(key, filename, declared or "application/octet-stream", path,
                     os.fdopen(fd, "wb"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.field is not None:
            self.field += data[start:end]
            if len(self.field) > self.max_field_bytes:
                raise too_large(PayloadTooLarge(self.max_field_bytes))
        elif self.file is not None:
            self.file.size += end - start
            if self.file.size > self.limits.max_upload_bytes:
                raise too_large(FileTooLarge(self.limits.max_upload_bytes))
            # A received chunk (64 KiB at most) into the page cache: quicker than the hop
            # to a worker thread would be.
            self.file.out.write(data[start:end])

    def _part_end(self) -> None:
        if self.field is not None:
            text, self.field = bytes(self.field), None
            if self.parts == 1:
                self.operations = _operations(text)
            else:
                self.slots = _slots(text, self.operations or {}, self.limits.max_files)
        elif self.file is not None:
            received, self.file = self.file, None
            received.out.close()
            upload = UploadedFile(received.filename, received.content_type, received.path,
                                  received.size)
            for container, key in self.slots[received.key]:
                container[key] = upload

    def _end(self) -> None:
        self.ended = True


def _text(value: bytes) -> str:
    # Browsers send names as UTF-8 (the WHATWG form encoding); anything else is kept
    # readable rather than refused: names are sanitised later.
    return value.decode("utf-8", errors="replace")


def _json(text: bytes, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise HTTPProblem(400, f"the `{what}` part is not valid JSON") from None


def _operations(text: bytes) -> dict[str, Any]:
    data = _json(text, OPERATIONS)
    if isinstance(data, list):
        raise HTTPProblem(400, "batched operations are not supported: send one at a time")
    if not isinstance(data, dict):
        raise HTTPProblem(400, "the `operations` part must be a JSON object")
    return data


def _slots(text: bytes, operations: dict[str, Any], max_files: int
           ) -> dict[str, list[tuple[Any, str | int]]]:
    """Where each file of the map goes: the container and key of each of its paths."""
    data = _json(text, MAP)
    if not isinstance(data, dict):
        raise HTTPProblem(400, 'the `map` part must be a JSON object: {"0": ["variables.file"]}')
    if len(data) > max_files:
        raise HTTPProblem(400, f"at most {max_files} files may be sent in one request")
    slots: dict[str, list[tuple[Any, str | int]]] = {}
    taken: set[tuple[int, str | int]] = set()
    for key, paths in data.items():
        if not (isinstance(paths, list) and paths
                and all(isinstance(path, str) for path in paths)):
            raise HTTPProblem(400, f"the map entry `{key}` must be a list of paths, "
                                   'such as ["variables.file"]')
        slots[key] = [_slot(operations, path) for path in paths]
        for container, place in slots[key]:
            # Two files for one place: one would be dropped without a word.
            if (id(container), place) in taken:
                raise HTTPProblem(400, f"the map gives one place to two files ({key})")
            taken.add((id(container), place))
    return slots


def _slot(operations: dict[str, Any], path: str) -> tuple[Any, str | int]:
    """The container and key `path` names: under `variables`, and a null there (the spec's
    placeholder), so a file never replaces a value the client sent, nor another file."""
    first, *rest = path.split(".")
    if first != "variables" or not rest:
        raise HTTPProblem(400, f"the map path `{path}` must point into `variables`")
    container: Any = operations.get("variables")
    for index, segment in enumerate(rest):
        key: str | int = segment
        if isinstance(container, list) and segment.isdigit() and int(segment) < len(container):
            key = int(segment)
        elif not (isinstance(container, dict) and segment in container):
            break
        if index == len(rest) - 1:
            if container[key] is not None:
                break
            return container, key
        container = container[key]
    raise HTTPProblem(400, f"the map path `{path}` does not point at a null in the "
                           "operation's variables")

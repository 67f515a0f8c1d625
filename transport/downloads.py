"""GET /files/<token>: a shared file's bytes, decrypted and verified while streaming.

Every request re-checks what the link cannot know: the caller's current membership of the
file's room and the file's state. A foreign, expired, altered or deleted link gets the same
404. Integrity: each 1 MiB segment is authenticated (AES-GCM) before any of it is sent; the
first before the status line (a tampered blob is refused, never served), a later one breaks
the connection (the client sees a short body). Either way it is logged as an error and
counted (`collab_file_downloads_total{outcome="tampered"}`)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from auth import AuthError, parse_bearer
from files import crypto, sniff
from files.service import FileService
from graph_db import files as store
from graph_db import participants
from graph_db.files import FileRecord
from observability.metrics import FILE_DOWNLOADS
from resolvers.context import Services

log = logging.getLogger(__name__)
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# The file is data, never a page: no scripts, no plugins, no frames, a sandbox.
CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
NOT_FOUND = Response("not found\n", status_code=404, media_type="text/plain",
                     headers={"cache-control": "no-store"})


def _headers(record: FileRecord) -> dict[str, str]:
    disposition = "inline" if sniff.inline_ok(record.content_type) else "attachment"
    ascii_name = record.name.encode("ascii", "replace").decode().replace('"', "_")
    return {
        "content-type": record.content_type,
        "content-disposition": f"{disposition}; filename=\"{ascii_name}\"; "
                               f"filename*=UTF-8''{quote(record.name)}",
        "x-content-type-options": "nosniff",
        "content-security-policy": CSP,
        "cache-control": "private, no-store",
        "referrer-policy": "no-referrer",
        "accept-ranges": "bytes",
    }


def byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """(start, end inclusive) of a single satisfiable range; None: the whole file (no
    header, or several ranges); False: unsatisfiable (416)."""
    if not header:
        return None
    match = RANGE.match(header.strip())
    if match is None:
        return None  # several ranges or another unit: the whole file, as RFC 9110 allows
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        return (max(0, size - length), size - 1) if length and size else False
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end and start < size else False


class Downloads:
    """Checks tokens with the services' links (made with the master key once, at start-up)."""

    async def handle(self, request: Request) -> Response:
        services: Services = request.app.state.services
        grant = services.links.check(request.path_params["token"])
        if grant is not None and not await _same_user(services, request, grant.user_id):
            grant = None
        record = await self._servable(services, grant.file_id, grant.user_id) if grant else None
        if grant is None or record is None:
            FILE_DOWNLOADS.labels("refused").inc()
            return NOT_FOUND
        span = byte_range(request.headers.get("range"), record.size)
        if span is False:
            return Response(status_code=416, headers={"content-range": f"bytes */{record.size}"})
        start, end = span if isinstance(span, tuple) else (0, record.size - 1)
        chunks = await self._opened(services.files, record, start, end)
        if chunks is None:
            return NOT_FOUND
        headers = _headers(record)
        headers["content-length"] = str(max(0, end - start + 1))
        status = 200
        if isinstance(span, tuple):
            status = 206
            headers["content-range"] = f"bytes {start}-{end}/{record.size}"
        FILE_DOWNLOADS.labels("partial" if status == 206 else "served").inc()
        services.audit.system("file.download", actor_id=grant.user_id, room_id=record.room_id,
                              object_type="File", object_id=record.id)
        return StreamingResponse(chunks, status_code=status, headers=headers)

    @staticmethod
    async def _servable(services: Services, file_id: str, user_id: str) -> FileRecord | None:
        (record,) = await store.files_by_ids(services.db, [file_id])
        if record is None or record.status not in store.SERVABLE:
            return None
        (member,) = await participants.memberships(services.db, [(record.room_id, user_id)])
        return record if member is not None else None

    async def _opened(self, files: FileService, record: FileRecord, start: int,
                      end: int) -> AsyncIterator[bytes] | None:
        """The range's chunks, the first already authenticated; None when tampered."""
        if record.size == 0:
            return _stream(iter(()), b"", record)
        dek = files.data_key(record)
        path = files.blobs.path(record.id)
        source = crypto.decrypt_range(path, record.id, dek, start, end)
        try:
            first = await asyncio.to_thread(next, source, b"")
        except (crypto.CryptoError, OSError) as exc:
            _alert(record, exc)
            return None
        return _stream(source, first, record)


async def _stream(source: Iterator[bytes], first: bytes, record: FileRecord
                  ) -> AsyncIterator[bytes]:
    if first:
        yield first
    while True:
        try:
            chunk = await asyncio.to_thread(next, source, None)
        except (crypto.CryptoError, OSError) as exc:
            _alert(record, exc)
            raise  # breaks the connection: the client never takes a short body for whole
        if chunk is None:
            return
        yield chunk


async def _same_user(services: Services, request: Request, user_id: str) -> bool:
    """A request that says who it is (a bearer token) must be the link's user: another
    user's link is refused. Without one the link alone suffices (an `<a href>`, `<img>`)."""
    header = request.headers.get("authorization")
    if header is None:
        return True
    try:
        claims = await services.verifier.verify(parse_bearer(header))
    except AuthError:
        return False
    return claims.user_id == user_id


def _alert(record: FileRecord, exc: BaseException) -> None:
    FILE_DOWNLOADS.labels("tampered").inc()
    log.error("file %s of room %s failed its integrity check and was not served: %s",
              record.id, record.room_id, exc)

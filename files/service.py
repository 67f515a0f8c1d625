"""The upload pipeline and the background rescans: sniff → (de-identify) → scan → encrypt →
store → commit, each step on a temporary file, so nothing is stored before it passed every
check and nothing half-done is left behind.

Fail closed: a scanner that cannot be reached keeps the file encrypted as PENDING_SCAN (not
downloadable) and rescans it in the background; its uploader is told the result."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from files import crypto, dicom, sniff
from files.crypto import KeyRing
from files.names import sanitize
from files.scanner import Scanner, ScannerUnavailable
from files.storage import BlobStore
from graph_db import files as store
from graph_db.driver import GraphDB
from graph_db.files import FileRecord
from graph_db.models import now_ms
from observability.metrics import FILE_SCANS, FILE_UPLOADS

log = logging.getLogger(__name__)
RESCAN_EVERY_S = 30.0
Told = Callable[[FileRecord], Awaitable[None]]  # a scan result, for its uploader


class UploadRefused(Exception):
    """What the caller is told: `code` and a message (resolvers turn it into a GraphQL error)."""

    def __init__(self, code: str, message: str, **extensions: object) -> None:
        super().__init__(message)
        self.code, self.extensions = code, extensions


@dataclass(frozen=True, slots=True)
class Incoming:
    room_id: str
    uploader_id: str
    name: str
    path: Path  # the upload's temporary file (the transport deletes it afterwards)
    size: int
    deidentify: bool


class FileService:
    def __init__(self, db: GraphDB, blobs: BlobStore, keys: KeyRing,
                 scanner: Scanner | None, *, retention_days: int = 30) -> None:
        self.db, self.blobs, self.keys, self.scanner = db, blobs, keys, scanner
        self.retention_ms = retention_days * 24 * 3600 * 1000
        self.on_scanned: list[Told] = []
        self._rescans: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._rescans = asyncio.create_task(self._rescan_forever(), name="file-rescans")

    async def close(self) -> None:
        if self._rescans is not None:
            self._rescans.cancel()
            await asyncio.gather(self._rescans, return_exceptions=True)

    # -- upload ------------------------------------------------------------------------------

    async def upload(self, incoming: Incoming) -> FileRecord:
        if incoming.size == 0:
            raise UploadRefused("BAD_USER_INPUT", "file: the file is empty", field="file")
        head = await asyncio.to_thread(_head, incoming.path)
        mime = sniff.detect(head)
        if not sniff.allowed(mime):
            FILE_UPLOADS.labels("refused_type").inc()
            raise UploadRefused("UNSUPPORTED_FILE_TYPE", f"files of type {mime} are not "
                                "accepted", contentType=mime)
        work = self.blobs.scratch_dir() / f"up-{secrets.token_hex(8)}"
        try:
            source, cleaned = await self._prepared(incoming, mime, work)
            status = await self._scan(source)
            return await self._store(incoming, source, mime, status, cleaned)
        finally:
            work.unlink(missing_ok=True)

    async def _prepared(self, incoming: Incoming, mime: str, work: Path) -> tuple[Path, bool]:
        """The bytes to store: a de-identified copy of a DICOM file when asked for."""
        if mime != "application/dicom" or not incoming.deidentify:
            return incoming.path, False
        try:
            await asyncio.to_thread(dicom.deidentify, incoming.path, work)
        except dicom.DeidentifyError as exc:
            raise UploadRefused("BAD_USER_INPUT", f"file: cannot de-identify: {exc}",
                                field="file") from None
        return work, True

    async def _scan(self, path: Path) -> str:
        if self.scanner is None:
            return store.UNSCANNED
        try:
            result = await self.scanner.scan(path)
        except ScannerUnavailable as exc:
            log.warning("file scanner unavailable (%s): the file waits for a rescan", exc)
            FILE_SCANS.labels("unavailable").inc()
            return store.PENDING_SCAN
        if not result.clean:
            FILE_SCANS.labels("infected").inc()
            FILE_UPLOADS.labels("infected").inc()
            raise UploadRefused("INFECTED", "the file was refused by the virus scanner",
                                signature=result.signature)
        FILE_SCANS.labels("clean").inc()
        return store.CLEAN

    async def _store(self, incoming: Incoming, source: Path, mime: str, status: str,
                     cleaned: bool) -> FileRecord:
        file_id = secrets.token_hex(16)
        dek, wrapped = self.keys.new_data_key()
        encrypted = self.blobs.scratch_dir() / f"{file_id}.enc"
        try:
            sha256 = await asyncio.to_thread(crypto.encrypt_file, source, encrypted, file_id,
                                             dek)
            size = (await asyncio.to_thread(os.stat, source)).st_size
            await self.blobs.put(file_id, encrypted)  # moved into the store when it succeeds
        finally:
            encrypted.unlink(missing_ok=True)
        try:
            record = await store.create(
                self.db, file_id=file_id, room_id=incoming.room_id,
                uploader_id=incoming.uploader_id, name=sanitize(incoming.name),
                content_type=mime, size=size, sha256=sha256, status=status,
                deidentified=cleaned, key_id=self.keys.key_id, wrapped_key=wrapped)
        except BaseException:
            await self.blobs.delete(file_id)  # not committed: nothing may stay behind
            raise
        if record is None:
            await self.blobs.delete(file_id)
            raise UploadRefused("NOT_FOUND", "room not found")
        FILE_UPLOADS.labels("stored" if status != store.PENDING_SCAN else "pending").inc()
        return record

    async def keep_recording(self, room_id: str, recorder_id: str, path: Path) -> FileRecord:
        """A call recording's track file, stored like a shared file of its room (scanned,
        encrypted, listed); the plaintext is the caller's to delete."""
        head = await asyncio.to_thread(_head, path)
        status = await self._scan(path)  # INFECTED raises: such a file is not kept
        size = (await asyncio.to_thread(os.stat, path)).st_size
        incoming = Incoming(room_id=room_id, uploader_id=recorder_id, name=path.name,
                            path=path, size=size, deidentify=False)
        return await self._store(incoming, path, sniff.detect(head), status, False)

    # -- reading -----------------------------------------------------------------------------

    def data_key(self, record: FileRecord) -> bytes:
        assert record.wrapped_key is not None, "a servable file has its key"
        return self.keys.unwrap(record.wrapped_key)

    # -- rescans -------------------------------------------------------------------------------

    async def rescan_pending(self) -> int:
        """Scans the files that wait for the scanner; how many got a verdict."""
        if self.scanner is None:
            return 0
        done = 0
        for record in await store.pending(self.db):
            if await self._rescan(record):
                done += 1
        return done

    async def _rescan(self, record: FileRecord) -> bool:
        assert self.scanner is not None
        plain = self.blobs.scratch_dir() / f"rescan-{secrets.token_hex(8)}"
        try:
            await asyncio.to_thread(_decrypt_to, self.blobs.path(record.id), plain,
                                    record.id, self.data_key(record))
            result = await self.scanner.scan(plain)
        except ScannerUnavailable:
            return False
        finally:
            plain.unlink(missing_ok=True)
        verdict = store.CLEAN if result.clean else store.INFECTED
        FILE_SCANS.labels("clean" if result.clean else "infected").inc()
        updated = await store.set_status(self.db, record.id, was=store.PENDING_SCAN,
                                         now=verdict, signature=result.signature)
        if updated is None:
            return False  # another instance decided it
        if verdict == store.INFECTED:
            await self.blobs.delete(record.id)  # its bytes are destroyed at once
        for told in self.on_scanned:
            await told(updated)
        return True

    async def shred_expired(self) -> int:
        """Files deleted (or refused) more than FILE_RETENTION_DAYS ago lose their data key
        and their bytes: unreadable for good, in backups too (the key was only in the graph)."""
        ids = await store.shred(self.db, now_ms() - self.retention_ms)
        for file_id in ids:
            await self.blobs.delete(file_id)
        if ids:
            log.info("destroyed %d deleted files past their retention", len(ids))
        return len(ids)

    async def _rescan_forever(self) -> None:
        while True:
            await asyncio.sleep(RESCAN_EVERY_S)
            try:
                await self.rescan_pending()
                await self.shred_expired()
            except Exception:
                log.warning("rescanning or expiring files failed", exc_info=True)


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(sniff.HEAD_BYTES)


def _decrypt_to(blob: Path, dst: Path, file_id: str, dek: bytes) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in crypto.decrypt_all(blob, file_id, dek):
            out.write(chunk)

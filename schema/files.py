"""Shared files of a room (README "Files"): the encrypted, scanned uploads and their links."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Self

import strawberry
from strawberry.file_uploads import Upload
from strawberry.types import Info

from graph_db.files import FileRecord
from resolvers import files as resolve
from resolvers import room_events
from resolvers.audit import audited
from resolvers.context import Context
from resolvers.pagination import Page
from schema.common import PageInfo
from schema.users import User

Ctx = Info[Context, None]


@strawberry.enum
class FileStatus(enum.Enum):
    CLEAN = "CLEAN"
    UNSCANNED = "UNSCANNED"
    PENDING_SCAN = "PENDING_SCAN"
    INFECTED = "INFECTED"
    DELETED = "DELETED"


@strawberry.type
class SharedFile:
    id: strawberry.ID
    name: str = strawberry.field(description="Sanitised: no path, no control characters.")
    content_type: str = strawberry.field(description="Detected from the bytes.")
    size: int
    sha256: str = strawberry.field(description="Of the bytes as stored (a de-identified "
                                               "copy's, when it is one).")
    status: FileStatus
    deidentified: bool
    created_at: datetime
    _record: strawberry.Private[FileRecord]

    @classmethod
    def of(cls, f: FileRecord) -> Self:
        return cls(id=strawberry.ID(f.id), name=f.name, content_type=f.content_type,
                   size=f.size, sha256=f.sha256, status=FileStatus(f.status),
                   deidentified=f.deidentified, created_at=f.created_at, _record=f)

    @strawberry.field
    async def uploaded_by(self, info: Ctx) -> User:
        return User.of(await room_events.user_of(info.context, self._record.uploader_id))

    @strawberry.field(description="Short-lived URL bound to the caller (valid 5 minutes). It "
                                  "answers 404 while the file waits for the scanner "
                                  "(PENDING_SCAN) and once it is deleted.")
    def download_url(self, info: Ctx) -> str:
        return resolve.download_url(info.context, self._record)


@strawberry.type
class FileEdge:
    cursor: str
    node: SharedFile


@strawberry.type
class FileConnection:
    edges: list[FileEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page[FileRecord]) -> Self:
        return cls(edges=[FileEdge(cursor=c, node=SharedFile.of(f))
                          for f, c in zip(page.items, page.cursors, strict=True)],
                   page_info=PageInfo.of(page))


@strawberry.type
class FileMutation:
    @strawberry.mutation(description="A multipart request (GraphQL multipart request spec) "
                                     "with an Apollo-Require-Preflight header. DICOM files are "
                                     "stripped of patient-identifying tags with `deidentify`.",
                         extensions=audited("File", room="room_id", created=True))
    async def upload_file(self, info: Ctx, room_id: strawberry.ID, file: Upload,
                          deidentify: bool = False) -> SharedFile:
        return SharedFile.of(await resolve.upload(info.context, room_id, file, deidentify))

    @strawberry.mutation(description="Its links stop working at once; its bytes and key are "
                                     "destroyed after FILE_RETENTION_DAYS.",
                         extensions=audited("File", by="id"))
    async def delete_file(self, info: Ctx, id: strawberry.ID) -> SharedFile:
        return SharedFile.of(await resolve.delete(info.context, id))

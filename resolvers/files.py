"""Shared files: upload (participants), the room's list, download URLs, deletion, and
attachments (docs in README "Files"). Parse → access check → files/ → return."""

from __future__ import annotations

from typing import Any

from files.service import Incoming, UploadRefused
from graph_db import files as store
from graph_db.events import EventType
from graph_db.files import FileRecord
from graph_db.models import RoomRecord
from resolvers import pagination, policy
from resolvers.access import access_room, find_room
from resolvers.calls import in_room
from resolvers.context import Context
from resolvers.errors import (
    BadInput,
    Forbidden,
    Infected,
    NotFound,
    ServiceError,
    UnsupportedFileType,
)


def _refusal(refused: UploadRefused) -> ServiceError:
    """The GraphQL error of an upload the pipeline refused."""
    kinds: dict[str, type[ServiceError]] = {"INFECTED": Infected,
                                            "UNSUPPORTED_FILE_TYPE": UnsupportedFileType}
    if refused.code == "NOT_FOUND":
        return NotFound("room")
    if refused.code in kinds:
        return kinds[refused.code](str(refused), **refused.extensions)
    field = str(refused.extensions.get("field", "file"))
    return BadInput(field, str(refused).partition(": ")[2] or str(refused))


async def upload(ctx: Context, room_id: str, file: Any, deidentify: bool) -> FileRecord:
    if not all(hasattr(file, a) for a in ("filename", "path", "size")):  # transport/uploads.py
        raise BadInput("file", "send the file as a multipart request (GraphQL multipart "
                               "request spec) with the Apollo-Require-Preflight header")
    found = await in_room(ctx, room_id)
    try:
        record = await ctx.services.files.upload(Incoming(
            room_id=room_id, uploader_id=found.viewer.id, name=file.filename,
            path=file.path, size=file.size, deidentify=deidentify))
    except UploadRefused as refused:
        raise _refusal(refused) from None
    ctx.loaders.file.prime(record.id, record)
    await ctx.services.hub.publish_ephemeral(room_id, EventType.FILE_SHARED, found.viewer.id,
                                             fileId=record.id)
    return record


async def access_file(ctx: Context, file_id: str) -> FileRecord:
    """A file of a room the caller participates in; missing or not theirs: NOT_FOUND."""
    record: FileRecord | None = (await ctx.loaders.file.load(file_id)
                                 if 0 < len(file_id) <= 64 else None)
    if record is None or record.status == store.DELETED:
        raise NotFound("file")
    found = await find_room(ctx, record.room_id)
    if found is None or not policy.can_see_inside(found.viewer.role, found.member):
        raise NotFound("file")
    return record


async def delete(ctx: Context, file_id: str) -> FileRecord:
    record = await access_file(ctx, file_id)
    found = await access_room(ctx, record.room_id)
    if record.uploader_id != found.viewer.id and not policy.can_manage(found.viewer.role,
                                                                        found.member):
        raise Forbidden("only its uploader, a host or a moderator deletes a file")
    deleted = await store.delete(ctx.db, file_id, found.viewer.id)
    if deleted is None:
        raise NotFound("file")
    ctx.loaders.file.clear(file_id)
    return deleted


async def room_files(ctx: Context, room: RoomRecord, first: int | None,
                     after: str | None) -> pagination.Page[FileRecord]:
    member = await ctx.loaders.membership.load((room.id, ctx.viewer.id))
    if not policy.can_see_inside(ctx.viewer.role, member):
        return pagination.Page([], [], False, False)
    limit = pagination.page_size(first, default=50)
    fp = pagination.fingerprint(room.id)
    keys = pagination.decode("files", fp, after)
    if keys is not None and (len(keys) != 2 or not isinstance(keys[0], int)
                             or not isinstance(keys[1], str)):
        raise BadInput("after", "malformed cursor")
    found = await store.room_page(ctx.db, room.id, after=(keys[0], keys[1]) if keys else None,
                                  limit=limit + 1)
    return pagination.forward(found, limit, after,
                              lambda f: pagination.encode("files", fp, f.created_ms, f.id))


def download_url(ctx: Context, record: FileRecord) -> str:
    """A link for the caller, valid DOWNLOAD_URL_TTL (the route refuses it while the file is
    not servable: pending a scan, deleted)."""
    viewer = ctx.viewer
    path, _ = ctx.services.links.issue(record.id, viewer.id)
    ctx.services.audit.system("file.url", actor_id=viewer.id, room_id=record.room_id,
                              object_type="File", object_id=record.id)
    base = ctx.settings.public_base_url
    if base is None and ctx.request is not None:
        base = str(ctx.request.base_url)
    return (base or "").rstrip("/") + path


async def attachments(ctx: Context, message_id: str) -> list[FileRecord]:
    found: list[FileRecord] = await ctx.loaders.attachments.load(message_id)
    return found


async def attach(ctx: Context, room_id: str, message_id: str, ids: list[str]) -> None:
    """After the message is committed: a file taken meanwhile by another message stays
    there (the statement attaches only untaken files)."""
    async def work(tx: Any) -> list[str]:
        return await store.attach(tx, room_id, ctx.viewer.id, message_id, ids)

    await ctx.db.write(work)  # the caller clears its loaders after the send


async def check_attachable(ctx: Context, room_id: str, ids: list[str]) -> list[str]:
    """The ids, when each is the sender's own unattached file of this room."""
    unique = list(dict.fromkeys(ids))
    if len(unique) > 10:
        raise BadInput("input.attachmentIds", "at most 10 files per message")
    ok = await store.attachable(ctx.db, room_id, ctx.viewer.id, unique)
    if set(ok) != set(unique):
        raise BadInput("input.attachmentIds", "only your own files of this room, not yet "
                                              "attached to a message")
    return unique

"""What a file is, judged from its bytes (libmagic), and which types the service accepts."""

from __future__ import annotations

import functools

import magic

# libmagic decides from the first few KB; more costs time and changes nothing it reports.
HEAD_BYTES = 8192

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# An allow-list of what libmagic answers (measured on libmagic 5.44 with files the tests
# build), to the extension a stored file gets. Everything else is refused, notably text/html,
# image/svg+xml (script), application/x-executable (ELF), application/x-dosexec and
# application/vnd.microsoft.portable-executable (PE), text/x-shellscript and
# text/x-script.python, and application/zip that libmagic did not recognise as OOXML.
ALLOWED: dict[str, str] = {
    "application/pdf": "pdf",
    "image/png": "png",
    "image/jpeg": "jpg",
    "application/dicom": "dcm",
    "video/mp4": "mp4",
    "video/webm": "webm",
    DOCX: "docx",
    XLSX: "xlsx",
    "text/plain": "txt",
}

# Shown in the page, never downloaded: types a browser renders without running anything.
# PDF stays out because viewers run scripts and forms; SVG and HTML are not allowed at all.
_INLINE = frozenset({"image/png", "image/jpeg", "video/mp4"})



@functools.cache
def _magic() -> magic.Magic:
    # One handle for the process: python-magic serialises calls on it with a lock, and a
    # call on an 8 KB head takes about 70 µs here, so threads hardly ever wait on it.
    return magic.Magic(mime=True)


def detect(head: bytes) -> str:
    """The MIME type libmagic reports for the first HEAD_BYTES of a file."""
    return str(_magic().from_buffer(head[:HEAD_BYTES]))


def allowed(mime: str) -> bool:
    """Whether a file of this detected type may be stored."""
    return mime in ALLOWED


def inline_ok(mime: str) -> bool:
    """Whether a download of this type may be shown inline rather than as an attachment."""
    return mime in _INLINE

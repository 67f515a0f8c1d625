"""Encryption at rest: a data key per file, wrapped by a master key; chunked AES-GCM blobs.

Blob layout: a 24-byte header, then one AES-GCM segment per SEGMENT bytes of plaintext (the
last one may be shorter; an empty file still has one, empty, segment), each with its 16-byte
tag.

    header  = b"CLB1" | version (1) | nonce prefix (7) | segment size (u32) | plaintext size (u64)
    nonce_i = nonce prefix (7) | i (u32, big-endian) | 1 if i is the last segment else 0
    aad_i   = header | file id (UTF-8) | i (u32, big-endian)

The counter and last flag in the nonce make reordered, repeated and dropped segments fail
their tag (the STREAM construction); the file id in the AAD makes a blob copied under another
file fail; the header in the AAD makes any edit to it fail, so sizes read from it can be
trusted once a segment has verified. All functions block: callers run them in a thread.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

MAGIC: Final = b"CLB1"
VERSION: Final = 1
SEGMENT: Final = 1 << 20
TAG: Final = 16
KEY_BYTES: Final = 32
_HEADER = struct.Struct(">4sB7sIQ")
HEADER_BYTES: Final = _HEADER.size
# Blobs written with another segment size stay readable; the bounds only stop a forged
# header from asking for a huge read (the header is authenticated only once a segment is).
_MIN_SEGMENT, _MAX_SEGMENT = 1 << 10, 1 << 24


class CryptoError(Exception):
    """Base of the errors this module raises."""


class Tampered(CryptoError):
    """A blob failed authentication: edited, truncated, reordered or of another file."""


class UnwrapFailed(CryptoError):
    """A wrapped data key did not unwrap: the wrong master key, or an edited wrapped key."""


class KeyRing:
    """The master key (KEK) that wraps every file's data key (RFC 3394 AES key wrap).

    `key_id` is stored with each wrapped key so that a later master key can be introduced
    while older files still name the one that wrapped them.
    """

    __slots__ = ("_kek", "key_id")

    def __init__(self, master_key: bytes, key_id: str) -> None:
        if len(master_key) != KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self._kek = bytes(master_key)
        self.key_id = key_id

    def __repr__(self) -> str:
        # Never the key itself: reprs end up in logs and tracebacks.
        return f"KeyRing(key_id={self.key_id!r})"

    def new_data_key(self) -> tuple[bytes, bytes]:
        """A fresh random 256-bit data key and its wrapped form (40 bytes) to store."""
        dek = secrets.token_bytes(KEY_BYTES)
        return dek, aes_key_wrap(self._kek, dek)

    def unwrap(self, wrapped: bytes) -> bytes:
        """The data key inside `wrapped`; UnwrapFailed when it was not wrapped by this key."""
        try:
            return aes_key_unwrap(self._kek, wrapped)
        except (InvalidUnwrap, ValueError) as exc:
            raise UnwrapFailed("the data key did not unwrap with this master key") from exc


@dataclass(frozen=True, slots=True)
class _Header:
    raw: bytes
    prefix: bytes
    segment: int
    size: int

    @property
    def count(self) -> int:
        return _segments(self.size, self.segment)


def _segments(size: int, segment: int) -> int:
    return max(1, -(-size // segment))


def _aead(dek: bytes) -> AESGCM:
    if len(dek) != KEY_BYTES:
        raise ValueError("a data key must be 32 bytes")
    return AESGCM(dek)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _aad(header: bytes, file_id: str, index: int) -> bytes:
    # The index is fixed-width and last, so no two (file id, index) pairs share an AAD.
    return header + file_id.encode() + index.to_bytes(4, "big")


def encrypt_file(src: Path, dst: Path, file_id: str, dek: bytes) -> str:
    """Encrypt `src` into `dst` (mode 0600, atomically) and return the plaintext's SHA-256."""
    aead = _aead(dek)
    # The temporary file sits beside `dst` so that the final rename stays on one filesystem.
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.tmp")
    with src.open("rb") as plain:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = _seal(plain, out, file_id, aead)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _fsync_dir(dst.parent)
    return digest


def _seal(plain: BinaryIO, out: BinaryIO, file_id: str, aead: AESGCM) -> str:
    size = os.fstat(plain.fileno()).st_size
    prefix = secrets.token_bytes(7)
    header = _HEADER.pack(MAGIC, VERSION, prefix, SEGMENT, size)
    count = _segments(size, SEGMENT)
    digest = hashlib.sha256()
    out.write(header)
    for index in range(count):
        chunk = plain.read(SEGMENT)
        # The header already promised `size`: a file that changes underneath is an error,
        # not a blob whose header lies.
        if len(chunk) != min(SEGMENT, size - index * SEGMENT):
            raise CryptoError("the source file changed while it was encrypted")
        digest.update(chunk)
        nonce = _nonce(prefix, index, index == count - 1)
        out.write(aead.encrypt(nonce, chunk, _aad(header, file_id, index)))
    if plain.read(1):
        raise CryptoError("the source file grew while it was encrypted")
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_header(blob: BinaryIO) -> _Header:
    raw = blob.read(HEADER_BYTES)
    if len(raw) != HEADER_BYTES:
        raise Tampered("the blob is shorter than its header")
    magic, version, prefix, segment, size = _HEADER.unpack(raw)
    if magic != MAGIC or version != VERSION:
        raise Tampered("the blob has no valid header")
    if not _MIN_SEGMENT <= segment <= _MAX_SEGMENT:
        raise Tampered("the blob header names an impossible segment size")
    header = _Header(raw, prefix, segment, size)
    # A dropped or truncated tail is caught here, before any reading, and again by the
    # last-flag in the nonce should the header have been edited to match.
    expected = HEADER_BYTES + size + header.count * TAG
    if os.fstat(blob.fileno()).st_size != expected:
        raise Tampered("the blob length does not match its header")
    return header


def plaintext_size(src: Path) -> int:
    """The plaintext size a blob's header declares (checked against the blob's length)."""
    with src.open("rb") as blob:
        return _read_header(blob).size


def decrypt_range(
    src: Path, file_id: str, dek: bytes, start: int, end_inclusive: int
) -> Iterator[bytes]:
    """The plaintext bytes start..end_inclusive, decrypting only the segments they touch.

    Each segment is authenticated whole before any of it is yielded, so a consumer never
    sees bytes of a bad segment: Tampered comes instead. The header is read on the first
    `next()`; a server should pull the first chunk before it sends a status line. A range
    past the end raises ValueError (the caller answers 416 before getting here).
    """
    if start < 0 or end_inclusive < start:
        raise ValueError("an empty or negative range")
    aead = _aead(dek)
    with src.open("rb") as blob:
        header = _read_header(blob)
        if end_inclusive >= header.size:
            raise ValueError("the range ends beyond the file")
        first, last = start // header.segment, end_inclusive // header.segment
        for index in range(first, last + 1):
            plain = _open_segment(blob, aead, header, file_id, index)
            base = index * header.segment
            yield plain[max(start - base, 0) : end_inclusive - base + 1]


def decrypt_all(src: Path, file_id: str, dek: bytes) -> Iterator[bytes]:
    """The whole plaintext, every segment authenticated (an empty file's one segment too)."""
    aead = _aead(dek)
    with src.open("rb") as blob:
        header = _read_header(blob)
        for index in range(header.count):
            plain = _open_segment(blob, aead, header, file_id, index)
            if plain:
                yield plain


def _open_segment(blob: BinaryIO, aead: AESGCM, header: _Header, file_id: str, index: int) -> bytes:
    length = min(header.segment, header.size - index * header.segment) + TAG
    blob.seek(HEADER_BYTES + index * (header.segment + TAG))
    sealed = blob.read(length)
    if len(sealed) != length:
        raise Tampered("the blob ends inside a segment")
    nonce = _nonce(header.prefix, index, index == header.count - 1)
    try:
        return aead.decrypt(nonce, sealed, _aad(header.raw, file_id, index))
    except InvalidTag as exc:
        raise Tampered(f"segment {index} failed authentication") from exc

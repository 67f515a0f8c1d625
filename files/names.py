"""File names as users send them, made safe to store, list and put in a header."""

from __future__ import annotations

import re
import unicodedata

MAX_BYTES = 255
FALLBACK = "file"
# An extension longer than this is more likely part of the name than a type; it is not
# worth sacrificing the stem for.
_MAX_EXT_BYTES = 16

# Bidi controls reorder what a reader sees ("invoice\u202efdp.exe" reads as "invoiceexe.pdf"),
# and the line/paragraph separators break header values; none has a place in a file name.
_INVISIBLE = frozenset(
    "\u061c\u200e\u200f\u2028\u2029"
    "\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069"
)
_LEADING = re.compile(r"^[\s.]+")


def sanitize(name: str) -> str:
    """A safe file name for `name`: never empty, never a path, at most 255 bytes of UTF-8."""
    # Controls go before normalising so that removing one cannot leave an uncomposed pair.
    kept = "".join(ch for ch in name if not _is_control(ch))
    kept = unicodedata.normalize("NFC", kept)
    # Both separators count: a Windows client sends "C:\\Users\\x\\scan.pdf".
    base = kept.replace("\\", "/").rsplit("/", 1)[-1]
    # Leading dots would make a hidden file or ".."; trailing spaces vanish on some systems.
    base = _LEADING.sub("", base).rstrip()
    if not base:
        return FALLBACK
    return _fit(base)


def _is_control(ch: str) -> bool:
    # Cc is exactly C0, DEL and C1; Cs (a lone surrogate, which JSON can carry) cannot be
    # encoded as UTF-8 at all.
    return unicodedata.category(ch) in ("Cc", "Cs") or ch in _INVISIBLE


def _fit(name: str) -> str:
    """Cut `name` to MAX_BYTES on a character boundary, keeping a short extension."""
    if len(name.encode()) <= MAX_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = dot + ext
    if not stem or len(suffix.encode()) > _MAX_EXT_BYTES:
        stem, suffix = name, ""
    room = MAX_BYTES - len(suffix.encode())
    # Decoding a cut UTF-8 prefix with "ignore" drops only the partial last character.
    cut = stem.encode()[:room].decode("utf-8", "ignore").rstrip()
    return (cut + suffix) if cut else FALLBACK

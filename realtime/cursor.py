"""Room event cursors: opaque to clients, bound to one room."""

from __future__ import annotations

import base64
import binascii


def encode(room_id: str, seq: int) -> str:
    return base64.urlsafe_b64encode(f"ev1:{room_id}:{seq}".encode()).decode().rstrip("=")


def decode(room_id: str, cursor: str) -> int:
    """The seq a cursor stands for; ValueError when it is malformed or of another room."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("malformed cursor") from None
    version, _, rest = raw.partition(":")
    cursor_room, _, seq = rest.rpartition(":")
    if version != "ev1" or cursor_room != room_id or not seq.isdigit():
        raise ValueError("cursor does not belong to this room's events")
    return int(seq)

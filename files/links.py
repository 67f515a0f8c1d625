"""Short-lived download URLs: `/files/<token>`, the token naming the file, the user it was
issued to and its expiry, signed (HMAC-SHA256) with a key derived from the master key. The
route checks the signature, the expiry, and then the user's *current* membership and the
file's state: a link outlives nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Grant:
    file_id: str
    user_id: str
    expires: int


class Links:
    def __init__(self, key: bytes, ttl: int, base: str = "/files/") -> None:
        # A key of its own: a download signature never doubles as anything else.
        self._key = hmac.new(key, b"collab download links v1", hashlib.sha256).digest()
        self.ttl, self.base = ttl, base

    def issue(self, file_id: str, user_id: str) -> tuple[str, int]:
        """The URL path and its expiry (unix seconds)."""
        expires = int(time.time()) + self.ttl
        payload = _b64(orjson.dumps([file_id, user_id, expires]))
        return f"{self.base}{payload}.{self._sign(payload)}", expires

    def check(self, token: str) -> Grant | None:
        """The grant of a genuine, unexpired token; None for anything else."""
        payload, _, signature = token.partition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            file_id, user_id, expires = orjson.loads(_unb64(payload))
        except (ValueError, TypeError, orjson.JSONDecodeError):
            return None
        if not (isinstance(file_id, str) and isinstance(user_id, str)
                and isinstance(expires, int)) or expires < time.time():
            return None
        return Grant(file_id, user_id, expires)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

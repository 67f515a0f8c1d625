"""ICE servers for a client: STUN as configured, TURN with short-lived credentials in the
TURN REST format that coturn checks under `use-auth-secret` (draft-uberti-behave-turn-rest).

coturn logs the username of every allocation, so it carries a random opaque id, never a user
id or name. Credentials matter only for new allocations (a join, an ICE restart, a
reconnect): an established relay survives their expiry (../shared/notes/calls.md §2b)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class IceConfiguration:
    servers: tuple[IceServer, ...]
    expires_at: datetime


def mint(secret: str, opaque_id: str, expiry: int) -> tuple[str, str]:
    """(username, credential) valid until the unix time `expiry`."""
    username = f"{expiry}:{opaque_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def turn_urls(url: str) -> tuple[str, ...]:
    """`turn:host:port` as its UDP and TCP variants (a url naming a transport is kept)."""
    if "transport=" in url or not url.startswith("turn:"):
        return (url,)
    joiner = "&" if "?" in url else "?"
    return (f"{url}{joiner}transport=udp", f"{url}{joiner}transport=tcp")


def configuration(*, stun: list[str], turn_url: str | None, turns_url: str | None,
                  secret: str | None, ttl: int, now: datetime,
                  with_turn: bool) -> IceConfiguration:
    """What `rtcConfiguration` answers. TURN only with a url and a secret, and only for
    callers allowed to relay (`with_turn`: participants of the room asked about)."""
    expiry = int(now.astimezone(UTC).timestamp()) + ttl
    servers: list[IceServer] = []
    if stun:
        servers.append(IceServer(urls=tuple(stun)))
    if with_turn and secret and (turn_url or turns_url):
        username, credential = mint(secret, secrets.token_hex(8), expiry)
        urls = (*(turn_urls(turn_url) if turn_url else ()), *((turns_url,) if turns_url else ()))
        servers.append(IceServer(urls=urls, username=username, credential=credential))
    return IceConfiguration(servers=tuple(servers),
                            expires_at=datetime.fromtimestamp(expiry, UTC))

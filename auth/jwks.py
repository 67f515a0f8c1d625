"""Public signing keys from a JWKS document (a file read at start, or a URL fetched and cached)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, RSAKey

logger = logging.getLogger(__name__)

JWKS_TTL_SECONDS = 600.0
# An unknown kid triggers a refetch; this floor stops a flood of made-up kids hammering the issuer.
JWKS_MIN_REFETCH_SECONDS = 30.0
MAX_JWKS_BYTES = 512 * 1024
MAX_JWKS_KEYS = 64

# Only asymmetric key types: an "oct" key in a JWKS would turn the public set into an HMAC secret.
_KEY_CLASSES: dict[str, type[RSAKey | ECKey]] = {"RSA": RSAKey, "EC": ECKey}
_KTY_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


def _monotonic() -> float:
    # Module-level so tests can move time forward without touching the event loop's clock.
    return time.monotonic()


class JwksError(Exception):
    """The JWKS document could not be fetched or used."""


def parse_jwks(document: object) -> dict[str, Key]:
    """Usable public keys by kid; unusable entries are skipped so one odd key can't sink the set."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('JWKS must be a JSON object with a "keys" list')
    keys: dict[str, Key] = {}
    for entry in document["keys"][:MAX_JWKS_KEYS]:
        key = _import_one(entry)
        if key is not None:
            key.ensure_kid()  # a key without kid gets its RFC 7638 thumbprint
            keys.setdefault(str(key.kid), key)
    return keys


def _import_one(entry: object) -> Key | None:
    if not isinstance(entry, dict):
        return None
    key_class = _KEY_CLASSES.get(str(entry.get("kty")))
    if key_class is None or entry.get("use", "sig") != "sig":
        return None
    try:
        return key_class.import_key(entry)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        logger.warning(
            "skipping unusable JWKS key kid=%r: %s",
            entry.get("kid"),
            type(exc).__name__,
        )
        return None


def load_jwks_file(path: Path) -> dict[str, Key]:
    """Keys from a local JWKS file; a broken file is a startup error, not a per-request one."""
    try:
        keys = parse_jwks(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, JwksError) as exc:
        raise ValueError(f"JWT_JWKS_FILE {path}: {exc}") from exc
    if not keys:
        raise ValueError(f"JWT_JWKS_FILE {path}: no usable RSA/EC signing keys")
    return keys


class JwksCache:
    """Static keys from a file plus remote keys from a URL, refreshed lazily."""

    def __init__(
        self,
        *,
        url: str | None = None,
        file: Path | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url
        self._static: dict[str, Key] = load_jwks_file(file) if file else {}
        self._remote: dict[str, Key] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()
        self._owns_client = url is not None and http_client is None
        self._client = http_client
        if self._owns_client:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(5.0))

    async def key_for(self, kid: str | None, alg: str) -> Key | None:
        """The key to check an `alg` signature with, or None when no key fits."""
        if self._url and self._is_stale():
            await self._refresh(force=False)
        key = self._lookup(kid, alg)
        if key is None and self._url:
            await self._refresh(force=True)
            key = self._lookup(kid, alg)
        return key

    @property
    def has_keys(self) -> bool:
        return bool(self._static or self._remote)

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()

    def _is_stale(self) -> bool:
        return (
            self._fetched_at is None
            or _monotonic() - self._fetched_at >= JWKS_TTL_SECONDS
        )

    def _lookup(self, kid: str | None, alg: str) -> Key | None:
        if kid is not None:
            static = self._static.get(kid)
            return static if static is not None else self._remote.get(kid)
        # Without a kid we only guess when exactly one key could possibly match.
        kty = _KTY_FOR_ALG_PREFIX.get(alg[:2])
        candidates = [
            key
            for key in (*self._static.values(), *self._remote.values())
            if key.key_type == kty and key.alg in (None, alg)
        ]
        return candidates[0] if len(candidates) == 1 else None

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = _monotonic()
            if (
                self._last_attempt is not None
                and now - self._last_attempt < JWKS_MIN_REFETCH_SECONDS
            ):
                return
            if not force and not self._is_stale():
                return  # another task refreshed while we waited for the lock
            self._last_attempt = now
            try:
                keys = await self._fetch()
            except JwksError as exc:
                # Keep serving the previous keys: an issuer hiccup shouldn't log everyone out.
                logger.warning("JWKS refresh from %s failed: %s", self._url, exc)
                return
            self._remote = keys
            self._fetched_at = now

    async def _fetch(self) -> dict[str, Key]:
        if self._client is None or self._url is None:
            raise JwksError("no JWKS URL configured")
        try:
            async with self._client.stream(
                "GET", self._url, headers={"Accept": "application/json"}
            ) as resp:
                if resp.status_code != 200:
                    raise JwksError(f"HTTP {resp.status_code}")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JwksError("document too large")
            return parse_jwks(json.loads(body))
        except httpx.HTTPError as exc:
            raise JwksError(type(exc).__name__) from exc
        except ValueError as exc:
            raise JwksError("invalid JSON") from exc

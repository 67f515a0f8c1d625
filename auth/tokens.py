"""Bearer JWT verification: HMAC with the shared secret, RSA/EC signatures through a JWKS."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc import jws
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyCurveError,
    JoseError,
    KeyParameterError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import Key, OctKey
from joserfc.jws import CompactSignature, JWSRegistry
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry

from graph_db.models import Role
from settings import PLACEHOLDER_SECRET, Settings

from .jwks import JwksCache

logger = logging.getLogger(__name__)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
MAX_TOKEN_BYTES = 8 * 1024
MAX_USER_ID_CHARS = 128
MAX_NAME_CHARS = 120
MAX_EMAIL_CHARS = 254

# One registry per algorithm: whichever key we picked is checked with exactly that algorithm.
# Unknown non-critical header parameters are ignored, as RFC 7515 4 asks; "crit" is still enforced.
_REGISTRIES = {
    alg: JWSRegistry(algorithms=[alg], strict_check_header=False)
    for alg in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
}
_CLAIM_MESSAGES = {
    "nbf": "token not yet valid",
    "iat": "token issued in the future",
    "aud": "invalid audience",
    "iss": "invalid issuer",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    display_name: str
    role: Role
    email: str | None
    expires_at: datetime  # timezone-aware UTC
    # The token's fingerprint (session_of): tells sessions apart in the audit trail
    # without keeping the token.
    session: str = dataclasses.field(default="", compare=False)


def session_of(token: str) -> str:
    return hashlib.blake2b(token.encode(), digest_size=12).hexdigest()


class AuthError(Exception):
    """Authentication failed; str(error) is short and safe to show to clients."""


class VerifiedTokens:
    """Tokens verified in the last minute: a client sends the same token with every request,
    and checking it again costs ~0.1 ms of the ~0.5 ms a small query takes. A hit is the
    same string, still within its expiry (with the leeway); an entry lives at most TTL_S, so
    a key withdrawn from the JWKS stops being honoured within a minute. Refusals are not
    kept: a flood of bad tokens must not evict good ones (the rate limits handle floods)."""

    TTL_S = 60.0
    MAX_ENTRIES = 10_000

    def __init__(self, leeway_s: float) -> None:
        self._leeway_s = leeway_s
        self._entries: dict[str, tuple[Claims, float]] = {}

    def get(self, token: str) -> Claims | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[1] < time.time():
            del self._entries[token]
            return None
        return entry[0]

    def put(self, token: str, claims: Claims) -> None:
        until = min(time.time() + self.TTL_S, claims.expires_at.timestamp() + self._leeway_s)
        if len(self._entries) >= self.MAX_ENTRIES:  # the oldest insertion goes first
            del self._entries[next(iter(self._entries))]
        self._entries[token] = (claims, until)


class TokenVerifier:
    """Checks signature, registered claims and our own claims of a compact JWS."""

    def __init__(
        self, settings: Settings, *, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self._hmac_alg = settings.jwt_algorithm
        self._secret = _hmac_key(settings)
        self._jwks: JwksCache | None = None
        if settings.jwt_jwks_url or settings.jwt_jwks_file:
            self._jwks = JwksCache(
                url=settings.jwt_jwks_url,
                file=settings.jwt_jwks_file,
                http_client=http_client,
            )
        self._registered = JWTClaimsRegistry(
            now=None, leeway=settings.jwt_leeway_seconds, **_claim_options(settings)
        )
        self._verified = VerifiedTokens(settings.jwt_leeway_seconds)

    async def verify(self, token: str) -> Claims:
        """Claims of a valid token; any failure is an AuthError with a client-safe message."""
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        try:
            claims = await self._verify(token)
        except AuthError:
            raise
        except JoseError as exc:
            logger.debug("token rejected: %s", exc.error)
            raise _auth_error_for(exc) from None
        except Exception:
            logger.exception("unexpected error while verifying a token")
            raise AuthError("invalid token") from None
        self._verified.put(token, claims)
        return claims

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.aclose()

    async def _verify(self, token: str) -> Claims:
        obj = _extract(token)
        alg, key = await self._key_for(obj.headers())
        if not jws.validate_compact(obj, key, registry=_REGISTRIES[alg]):
            raise AuthError("invalid signature")
        payload = _payload(obj)
        for name in ("exp", "nbf", "iat"):
            if name in payload and not _is_numeric_date(payload[name]):
                raise AuthError(f"invalid claim: {name}")
        self._registered.validate(payload)
        return dataclasses.replace(_claims_from(payload), session=session_of(token))

    async def _key_for(self, headers: dict[str, Any]) -> tuple[str, Key]:
        # The header only says which of *our* allowed paths to try; it never picks the key kind:
        # HS* is checked with the shared secret only, RS/PS/ES only with JWKS public keys.
        alg, kid = headers.get("alg"), headers.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            raise AuthError("malformed token")
        if alg in HMAC_ALGORITHMS:
            if alg != self._hmac_alg or self._secret is None:
                raise AuthError("unsupported algorithm")
            return alg, self._secret
        if alg not in ASYMMETRIC_ALGORITHMS or self._jwks is None:
            raise AuthError("unsupported algorithm")
        key = await self._jwks.key_for(kid, alg)
        if key is None:
            raise AuthError(
                "unknown signing key"
                if self._jwks.has_keys
                else "signing keys unavailable"
            )
        return alg, key


def parse_bearer(header_value: str | None) -> str:
    """The JWT out of an `Authorization: Bearer <jwt>` header value."""
    if header_value is None or not header_value.strip():
        raise AuthError("missing bearer token")
    parts = header_value.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise AuthError("malformed authorization header")
    return parts[1]


def _hmac_key(settings: Settings) -> OctKey | None:
    # The placeholder secret is public knowledge: in production (where settings only allow it
    # alongside a JWKS) it must never verify anything.
    if settings.is_production and settings.jwt_secret_key == PLACEHOLDER_SECRET:
        return None
    return OctKey.import_key(settings.jwt_secret_key)


def _claim_options(settings: Settings) -> dict[str, ClaimsOption]:
    options: dict[str, ClaimsOption] = {"exp": {"essential": True}}
    if settings.jwt_issuer:
        options["iss"] = {"essential": True, "value": settings.jwt_issuer}
    if settings.jwt_audience:
        options["aud"] = {"essential": True, "value": settings.jwt_audience}
    return options


def _extract(token: str) -> CompactSignature:
    # Size first, so an attacker can't make us base64/JSON-decode megabytes.
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
        raise AuthError("malformed token")
    try:
        obj = jws.extract_compact(token.encode("ascii"))
    except (JoseError, ValueError, TypeError):
        raise AuthError("malformed token") from None
    headers = obj.headers()
    # "b64": false (RFC 7797) changes what is signed; JWTs never use it.
    if not isinstance(headers, dict) or "b64" in headers:
        raise AuthError("malformed token")
    return obj


def _payload(obj: CompactSignature) -> dict[str, Any]:
    try:
        payload = json.loads(obj.payload)
    except (TypeError, ValueError, RecursionError):
        raise AuthError("malformed token") from None
    if not isinstance(payload, dict):
        raise AuthError("malformed token")
    return payload


def _is_numeric_date(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _claims_from(payload: dict[str, Any]) -> Claims:
    user_id = _required_text(payload, "sub", MAX_USER_ID_CHARS, strip=False)
    name = _required_text(payload, "name", MAX_NAME_CHARS, strip=True)
    role_value = payload.get("role")
    if role_value is None:
        raise AuthError("missing claim: role")
    try:
        role = Role(role_value.strip().lower()) if isinstance(role_value, str) else None
    except ValueError:
        role = None
    if role is None:
        raise AuthError("invalid claim: role")
    try:
        expires_at = datetime.fromtimestamp(payload["exp"], tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise AuthError("invalid claim: exp") from None
    return Claims(user_id, name, role, _optional_email(payload), expires_at)


def _required_text(
    payload: dict[str, Any], claim: str, max_chars: int, *, strip: bool
) -> str:
    value = payload.get(claim)
    if value is None:
        raise AuthError(f"missing claim: {claim}")
    if not isinstance(value, str):
        raise AuthError(f"invalid claim: {claim}")
    text = value.strip() if strip else value
    if not text.strip() or len(text) > max_chars:
        raise AuthError(f"invalid claim: {claim}")
    return text


def _optional_email(payload: dict[str, Any]) -> str | None:
    value = payload.get("email")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_EMAIL_CHARS or "@" not in value:
        raise AuthError("invalid claim: email")
    return value.strip()


def _auth_error_for(exc: JoseError) -> AuthError:
    if isinstance(exc, ExpiredTokenError):
        return AuthError("token expired")
    if isinstance(exc, MissingClaimError):
        return AuthError(f"missing claim: {exc.claim}")
    if isinstance(exc, InvalidClaimError):
        return AuthError(_CLAIM_MESSAGES.get(exc.claim, f"invalid claim: {exc.claim}"))
    if isinstance(exc, BadSignatureError):
        return AuthError("invalid signature")
    if isinstance(exc, UnsupportedAlgorithmError):
        return AuthError("unsupported algorithm")
    if isinstance(exc, KeyParameterError | InvalidKeyCurveError):
        return AuthError("invalid signing key")
    return AuthError("malformed token")

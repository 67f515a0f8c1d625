"""Mint HMAC-signed tokens for local development.

`python -m auth.dev_token --role doctor --name "Dr A"` prints one.
"""

from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from joserfc import jwt
from joserfc.jwk import OctKey

from graph_db.models import Role
from settings import Settings, load_settings

from .tokens import MAX_NAME_CHARS, MAX_USER_ID_CHARS

MAX_TTL_HOURS = 24 * 30


def issue_dev_token(
    settings: Settings,
    *,
    user_id: str,
    name: str,
    role: Role,
    email: str | None = None,
    ttl: timedelta = timedelta(hours=12),
) -> str:
    """A token TokenVerifier accepts, signed with the shared secret; refused in production."""
    if settings.is_production:
        # Anyone able to run this with the production secret could mint admin tokens at will.
        raise ValueError("dev tokens are not issued when ENVIRONMENT=production")
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": user_id,
        "name": name.strip(),
        "role": Role(role).value,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    if email:
        claims["email"] = email
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    key = OctKey.import_key(settings.jwt_secret_key)
    alg = settings.jwt_algorithm
    return jwt.encode({"alg": alg}, claims, key, algorithms=[alg])


def slug_user_id(name: str) -> str:
    """A stable id for a display name, so the same name always maps to the same dev user."""
    ascii_name = (
        unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    )
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return f"dev-{slug or 'user'}"[:MAX_USER_ID_CHARS]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m auth.dev_token", description=__doc__
    )
    parser.add_argument(
        "--role", required=True, type=str.lower, choices=[r.value for r in Role]
    )
    parser.add_argument("--name", required=True, help="display name, e.g. 'Dr A'")
    parser.add_argument(
        "--user-id", help="defaults to a slug of the name, e.g. dev-dr-a"
    )
    parser.add_argument("--email")
    parser.add_argument("--ttl-hours", type=float, default=12.0)
    args = parser.parse_args(argv)
    if not args.name.strip() or len(args.name.strip()) > MAX_NAME_CHARS:
        parser.error(f"--name must be 1..{MAX_NAME_CHARS} characters")
    if args.user_id is not None and not 0 < len(args.user_id) <= MAX_USER_ID_CHARS:
        parser.error(f"--user-id must be 1..{MAX_USER_ID_CHARS} characters")
    if not 0 < args.ttl_hours <= MAX_TTL_HOURS:
        parser.error(f"--ttl-hours must be in (0, {MAX_TTL_HOURS}]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = load_settings()
    try:
        token = issue_dev_token(
            settings,
            user_id=args.user_id or slug_user_id(args.name),
            name=args.name,
            role=Role(args.role),
            email=args.email,
            ttl=timedelta(hours=args.ttl_hours),
        )
    except (ValueError, OverflowError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())

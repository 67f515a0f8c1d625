"""auth.tokens, auth.jwks, auth.dev_token: what a token must look like to get in."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey, RSAKey

import auth.jwks as jwks_module
from auth import AuthError, Claims, Role, TokenVerifier, issue_dev_token, parse_bearer
from auth.dev_token import slug_user_id
from settings import PLACEHOLDER_SECRET, Settings

SECRET = "x" * 32
REPO_ROOT = Path(__file__).resolve().parents[1]


# --- helpers ---------------------------------------------------------------------------------


def make_settings(**overrides: Any) -> Settings:
    # Every auth field explicit, so stray JWT_* variables in the environment can't change a test.
    values: dict[str, Any] = {
        "environment": "test",
        "jwt_secret_key": SECRET,
        "jwt_algorithm": "HS256",
        "jwt_jwks_url": None,
        "jwt_jwks_file": None,
        "jwt_issuer": None,
        "jwt_audience": None,
        "jwt_leeway_seconds": 30,
        "allow_insecure_http": True,  # production here is about tokens, not TLS
        "file_master_key": "5e" * 32, "file_scanning": "off",  # nor about files
    }
    values.update(overrides)
    return Settings(**values)


def now_ts() -> int:
    return int(time.time())


_token_ids = (f"t{i}" for i in itertools.count())


def claims(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sub": "user-1",
        "name": "Dr A",
        "role": "doctor",
        "iat": now_ts(),
        "exp": now_ts() + 3600,
        # Every token its own: a verified token is remembered (VerifiedTokens), and these
        # tests are about what a first verification does.
        "jti": next(_token_ids),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: object) -> str:
    return b64url(json.dumps(obj).encode())


def hand_token(
    header: dict[str, Any],
    payload: object,
    hmac_key: bytes | None,
    digest: str = "sha256",
) -> str:
    """A JWS built without joserfc, for tokens it would refuse to create."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    if hmac_key is None:
        return signing_input + "."
    sig = hmac.new(hmac_key, signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{b64url(sig)}"


def hs_token(payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(
        {"alg": alg}, payload, OctKey.import_key(secret), algorithms=[alg]
    )


def signed(
    key: Key, alg: str, payload: dict[str, Any], kid: str | None = "default"
) -> str:
    header: dict[str, Any] = {"alg": alg}
    if kid is not None:
        header["kid"] = key.kid if kid == "default" else kid
    return jwt.encode(header, payload, key, algorithms=[alg])


def public_jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


@asynccontextmanager
async def verifier_for(settings: Settings) -> AsyncIterator[TokenVerifier]:
    verifier = TokenVerifier(settings)
    try:
        yield verifier
    finally:
        await verifier.aclose()


def payload_of(token: str) -> dict[str, Any]:
    """What a compact JWS claims, read without verifying it (to compare with the result)."""
    body = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


async def verified(verifier: TokenVerifier, token: str) -> Claims:
    """Verifies `token` and checks the claims are exactly the ones it carries."""
    found = await verifier.verify(token)
    payload = payload_of(token)
    assert found.user_id == payload["sub"]
    assert found.display_name == payload["name"]
    assert found.role is Role(payload["role"])
    assert found.email == payload.get("email")
    assert found.expires_at == datetime.fromtimestamp(payload["exp"], UTC)
    return found


async def rejection(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as info:
        await verifier.verify(token)
    return str(info.value)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})


@pytest.fixture(scope="module")
def rsa_key_2() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: RSAKey, ec_key: ECKey) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(public_jwks(rsa_key, ec_key)))
    return path


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(jwks_module, "_monotonic", fake)
    return fake


class JwksServer:
    """A real HTTP server on a free loopback port serving a swappable JWKS document."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.status = 200
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps(server.document).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = (
            f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


# --- HMAC ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_valid_hs256_token_gives_claims() -> None:
    exp = now_ts() + 600
    token = hs_token(
        claims(role="DOCTOR", name="  Dr A  ", email="a@example.org", exp=exp)
    )
    async with verifier_for(make_settings()) as verifier:
        got = await verifier.verify(token)
    assert got == Claims(
        user_id="user-1",
        display_name="Dr A",
        role=Role.DOCTOR,
        email="a@example.org",
        expires_at=datetime.fromtimestamp(exp, tz=UTC),
    )
    assert got.expires_at.tzinfo is UTC


@pytest.mark.asyncio
async def test_a_verified_token_is_remembered_until_it_expires(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client's next requests with the same token skip the signature check (issue 9), but
    never past the token's expiry (plus leeway) nor past a minute (a withdrawn JWKS key)."""
    clock = [time.time()]
    monkeypatch.setattr("time.time", lambda: clock[0])  # joserfc's clock too
    checked: list[str] = []
    token = hs_token(claims(exp=int(clock[0]) + 600))
    short = hs_token(claims(sub="user-2", exp=int(clock[0]) + 61 + 20))
    async with verifier_for(make_settings(jwt_leeway_seconds=30)) as verifier:
        original = verifier._verify

        async def counting(t: str) -> Claims:
            checked.append(t)
            return await original(t)

        monkeypatch.setattr(verifier, "_verify", counting)
        first = await verifier.verify(token)
        assert await verifier.verify(token) == first and checked == [token]
        clock[0] += 61  # past the minute: checked again
        assert await verifier.verify(token) == first and checked == [token, token]
        await verifier.verify(short)
        clock[0] += 20 + 30 + 1  # past exp + leeway: refused, as a first look would
        with pytest.raises(AuthError, match="token expired"):
            await verifier.verify(short)
        with pytest.raises(AuthError):  # a bad token is never remembered as good
            await verifier.verify(token[:-2] + "xx")


@pytest.mark.asyncio
async def test_configured_hmac_algorithm_is_the_only_one_accepted() -> None:
    async with verifier_for(make_settings(jwt_algorithm="HS512")) as verifier:
        assert (
            await verifier.verify(hs_token(claims(), alg="HS512"))
        ).role is Role.DOCTOR
        assert (
            await rejection(verifier, hs_token(claims(), alg="HS256"))
            == "unsupported algorithm"
        )


@pytest.mark.asyncio
async def test_placeholder_secret_verifies_nothing_in_production(
    rsa_key: RSAKey, jwks_file: Path
) -> None:
    settings = make_settings(
        environment="production",
        jwt_secret_key=PLACEHOLDER_SECRET,
        jwt_jwks_file=jwks_file,
    )
    async with verifier_for(settings) as verifier:
        await verified(verifier, signed(rsa_key, "RS256", claims()))
        token = hs_token(claims(), secret=PLACEHOLDER_SECRET)
        assert await rejection(verifier, token) == "unsupported algorithm"


# --- JWKS file -------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("alg", ["RS256", "RS384", "PS256"])
async def test_rsa_tokens_via_jwks_file(
    rsa_key: RSAKey, jwks_file: Path, alg: str
) -> None:
    async with verifier_for(make_settings(jwt_jwks_file=jwks_file)) as verifier:
        got = await verifier.verify(signed(rsa_key, alg, claims(role="teacher")))
    assert got.role is Role.TEACHER


@pytest.mark.asyncio
async def test_es256_token_via_jwks_file(ec_key: ECKey, jwks_file: Path) -> None:
    async with verifier_for(make_settings(jwt_jwks_file=jwks_file)) as verifier:
        assert (
            await verifier.verify(signed(ec_key, "ES256", claims()))
        ).user_id == "user-1"


@pytest.mark.asyncio
async def test_es384_token_via_jwks_file(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384", parameters={"kid": "ec-384"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(public_jwks(key)))
    async with verifier_for(make_settings(jwt_jwks_file=path)) as verifier:
        await verified(verifier, signed(key, "ES384", claims()))


@pytest.mark.asyncio
async def test_kid_selection_and_mismatches(
    rsa_key: RSAKey, rsa_key_2: RSAKey, ec_key: ECKey, jwks_file: Path
) -> None:
    async with verifier_for(make_settings(jwt_jwks_file=jwks_file)) as verifier:
        assert (
            await rejection(verifier, signed(rsa_key_2, "RS256", claims()))
            == "unknown signing key"
        )
        forged = signed(rsa_key_2, "RS256", claims(), kid="rsa-1")
        assert await rejection(verifier, forged) == "invalid signature"
        # ES256 header pointing at an RSA key.
        assert (
            await rejection(verifier, signed(ec_key, "ES256", claims(), kid="rsa-1"))
            == "invalid signing key"
        )
        # No kid, but only one RSA key could have made an RS256 signature.
        await verified(verifier, signed(rsa_key, "RS256", claims(), kid=None))


@pytest.mark.asyncio
async def test_no_kid_and_several_candidate_keys_is_refused(
    tmp_path: Path, rsa_key: RSAKey, rsa_key_2: RSAKey
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(public_jwks(rsa_key, rsa_key_2)))
    async with verifier_for(make_settings(jwt_jwks_file=path)) as verifier:
        assert (
            await rejection(verifier, signed(rsa_key, "RS256", claims(), kid=None))
            == "unknown signing key"
        )


@pytest.mark.asyncio
async def test_single_key_jwks_accepts_token_without_kid(
    tmp_path: Path, rsa_key: RSAKey
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(public_jwks(rsa_key)))
    async with verifier_for(make_settings(jwt_jwks_file=path)) as verifier:
        await verified(verifier, signed(rsa_key, "RS256", claims(), kid=None))


def test_broken_jwks_file_fails_at_start(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0"}]}')
    with pytest.raises(ValueError, match="no usable"):
        TokenVerifier(make_settings(jwt_jwks_file=path))
    path.write_text("not json")
    with pytest.raises(ValueError, match="JWT_JWKS_FILE"):
        TokenVerifier(make_settings(jwt_jwks_file=path))


# --- JWKS URL --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rs256_and_es256_via_jwks_url(
    jwks_server: JwksServer, clock: FakeClock, rsa_key: RSAKey, ec_key: ECKey
) -> None:
    jwks_server.document = public_jwks(rsa_key, ec_key)
    async with verifier_for(make_settings(jwt_jwks_url=jwks_server.url)) as verifier:
        assert (
            await verifier.verify(signed(rsa_key, "RS256", claims()))
        ).role is Role.DOCTOR
        assert (
            await verifier.verify(signed(ec_key, "ES256", claims(role="patient")))
        ).role is Role.PATIENT
        clock.advance(599)  # still within the cache TTL
        await verified(verifier, signed(rsa_key, "RS256", claims()))
        assert jwks_server.hits == 1
        clock.advance(2)  # TTL over: the next verify refetches
        await verified(verifier, signed(rsa_key, "RS256", claims()))
        assert jwks_server.hits == 2


@pytest.mark.asyncio
async def test_key_rotation_and_refetch_throttle(
    jwks_server: JwksServer, clock: FakeClock, rsa_key: RSAKey, rsa_key_2: RSAKey
) -> None:
    jwks_server.document = public_jwks(rsa_key)
    async with verifier_for(make_settings(jwt_jwks_url=jwks_server.url)) as verifier:
        await verified(verifier, signed(rsa_key, "RS256", claims()))
        jwks_server.document = public_jwks(rsa_key_2)  # the issuer rotates
        new_token = signed(rsa_key_2, "RS256", claims())
        # Within 30 s of the last fetch an unknown kid does not reach the issuer.
        assert await rejection(verifier, new_token) == "unknown signing key"
        assert jwks_server.hits == 1
        clock.advance(31)
        assert (await verifier.verify(new_token)).user_id == "user-1"
        assert jwks_server.hits == 2
        # A flood of made-up kids costs the issuer nothing more...
        for i in range(20):
            bogus = signed(rsa_key_2, "RS256", claims(), kid=f"bogus-{i}")
            assert await rejection(verifier, bogus) == "unknown signing key"
        assert jwks_server.hits == 2
        # ...and at most one fetch per 30 s afterwards.
        clock.advance(31)
        await asyncio.gather(
            *(
                rejection(verifier, signed(rsa_key_2, "RS256", claims(), kid=f"x{i}"))
                for i in range(10)
            )
        )
        assert jwks_server.hits == 3


@pytest.mark.asyncio
async def test_jwks_url_outage_keeps_last_keys(
    jwks_server: JwksServer, clock: FakeClock, rsa_key: RSAKey
) -> None:
    jwks_server.status = 500
    jwks_server.document = public_jwks(rsa_key)
    token = signed(rsa_key, "RS256", claims())
    async with verifier_for(make_settings(jwt_jwks_url=jwks_server.url)) as verifier:
        assert await rejection(verifier, token) == "signing keys unavailable"
        jwks_server.status = 200
        clock.advance(31)
        await verified(verifier, token)
        jwks_server.status = 500
        clock.advance(
            700
        )  # cache expired and the refresh fails: the old keys still serve
        await verified(verifier, signed(rsa_key, "RS256", claims()))  # a new token
        assert jwks_server.hits == 3


# --- attacks ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_alg_none_is_rejected(jwks_file: Path) -> None:
    async with verifier_for(make_settings(jwt_jwks_file=jwks_file)) as verifier:
        for alg in ("none", "None", "NONE"):
            token = hand_token({"alg": alg, "typ": "JWT"}, claims(role="admin"), None)
            assert await rejection(verifier, token) == "unsupported algorithm"


@pytest.mark.asyncio
async def test_algorithm_confusion_with_rsa_public_key_fails(
    rsa_key: RSAKey, jwks_file: Path
) -> None:
    pem = rsa_key.as_pem(private=False)
    jwk_json = json.dumps(rsa_key.as_dict(private=False)).encode()
    async with verifier_for(make_settings(jwt_jwks_file=jwks_file)) as verifier:
        for hmac_key in (pem, jwk_json):
            token = hand_token(
                {"alg": "HS256", "kid": "rsa-1"}, claims(role="admin"), hmac_key
            )
            assert await rejection(verifier, token) == "invalid signature"


def test_public_key_is_refused_as_hmac_secret(rsa_key: RSAKey) -> None:
    settings = make_settings(jwt_secret_key=rsa_key.as_pem(private=False).decode())
    with pytest.raises(ValueError):
        TokenVerifier(settings)


@pytest.mark.asyncio
async def test_oct_key_in_jwks_is_ignored(tmp_path: Path, rsa_key: RSAKey) -> None:
    oct_secret = b"attacker-controlled-oct-key-0001"
    document = public_jwks(rsa_key)
    document["keys"].append({"kty": "oct", "kid": "oct-1", "k": b64url(oct_secret)})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(document))
    async with verifier_for(make_settings(jwt_jwks_file=path)) as verifier:
        token = hand_token({"alg": "HS256", "kid": "oct-1"}, claims(), oct_secret)
        assert await rejection(verifier, token) == "invalid signature"


@pytest.mark.asyncio
@pytest.mark.parametrize("alg", ["HS1", "RS1", "EdDSA", "A128KW", "hs256"])
async def test_unknown_algorithms_are_rejected(alg: str) -> None:
    async with verifier_for(make_settings()) as verifier:
        token = hand_token({"alg": alg}, claims(), SECRET.encode())
        assert await rejection(verifier, token) == "unsupported algorithm"


@pytest.mark.asyncio
async def test_asymmetric_token_without_jwks_configured(rsa_key: RSAKey) -> None:
    async with verifier_for(make_settings()) as verifier:
        assert (
            await rejection(verifier, signed(rsa_key, "RS256", claims()))
            == "unsupported algorithm"
        )


@pytest.mark.asyncio
async def test_tampered_tokens_fail_signature() -> None:
    header, payload, sig = hs_token(claims()).split(".")
    promoted = f"{header}.{segment(claims(role='admin'))}.{sig}"
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    async with verifier_for(make_settings()) as verifier:
        assert await rejection(verifier, promoted) == "invalid signature"
        assert (
            await rejection(verifier, f"{header}.{payload}.{flipped}")
            == "invalid signature"
        )
        other = hs_token(claims(), secret="y" * 32)
        assert await rejection(verifier, other) == "invalid signature"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "..",
        "a.b.c.d.e",
        "é.é.é",
        f"{b64url(b'not json')}.{segment(claims())}.sig",
        f"{segment(['alg', 'HS256'])}.{segment(claims())}.sig",
        f"{segment({'typ': 'JWT'})}.{segment(claims())}.sig",
        f"{segment({'alg': 123})}.{segment(claims())}.sig",
        hand_token({"alg": "HS256"}, ["not", "an", "object"], SECRET.encode()),
        hand_token(
            {"alg": "HS256", "b64": False, "crit": ["b64"]}, claims(), SECRET.encode()
        ),
    ],
)
async def test_garbage_is_malformed(token: str) -> None:
    async with verifier_for(make_settings()) as verifier:
        assert await rejection(verifier, token) == "malformed token"


@pytest.mark.asyncio
async def test_oversize_token_is_malformed() -> None:
    token = hs_token(claims(padding="p" * 9000))
    assert len(token) > 8 * 1024
    async with verifier_for(make_settings()) as verifier:
        assert await rejection(verifier, token) == "malformed token"


# --- registered claims -----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": now_ts() - 3600}, "token expired"),
        ({"exp": None}, "missing claim: exp"),
        ({"exp": "tomorrow"}, "invalid claim: exp"),
        ({"nbf": now_ts() + 3600}, "token not yet valid"),
        ({"iat": now_ts() + 3600}, "token issued in the future"),
    ],
)
async def test_time_claims(overrides: dict[str, Any], message: str) -> None:
    async with verifier_for(make_settings()) as verifier:
        assert await rejection(verifier, hs_token(claims(**overrides))) == message


@pytest.mark.asyncio
async def test_leeway_tolerates_small_clock_skew() -> None:
    token = hs_token(claims(exp=now_ts() - 10, nbf=now_ts() + 10, iat=now_ts() + 10))
    async with verifier_for(make_settings(jwt_leeway_seconds=30)) as verifier:
        await verified(verifier, token)
    async with verifier_for(make_settings(jwt_leeway_seconds=0)) as verifier:
        # joserfc checks claims in payload order; any of the three reasons is right here.
        assert await rejection(verifier, token) in {
            "token expired",
            "token not yet valid",
            "token issued in the future",
        }


@pytest.mark.asyncio
async def test_audience_and_issuer() -> None:
    settings = make_settings(jwt_issuer="https://id.example", jwt_audience="collab")
    good = {"iss": "https://id.example", "aud": "collab"}
    async with verifier_for(settings) as verifier:
        await verified(verifier, hs_token(claims(**good)))
        await verified(verifier,
            hs_token(claims(**{**good, "aud": ["other", "collab"]}))
        )
        assert (
            await rejection(verifier, hs_token(claims(**{**good, "aud": "other"})))
            == "invalid audience"
        )
        assert (
            await rejection(verifier, hs_token(claims(**{**good, "aud": ["a", "b"]})))
            == "invalid audience"
        )
        assert (
            await rejection(verifier, hs_token(claims(**{**good, "aud": None})))
            == "missing claim: aud"
        )
        assert (
            await rejection(
                verifier, hs_token(claims(**{**good, "iss": "https://evil"}))
            )
            == "invalid issuer"
        )
        assert (
            await rejection(verifier, hs_token(claims(**{**good, "iss": None})))
            == "missing claim: iss"
        )


# --- our claims ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"role": None}, "missing claim: role"),
        ({"role": "superuser"}, "invalid claim: role"),
        ({"role": ["admin"]}, "invalid claim: role"),
        ({"sub": None}, "missing claim: sub"),
        ({"sub": ""}, "invalid claim: sub"),
        ({"sub": 42}, "invalid claim: sub"),
        ({"sub": "u" * 129}, "invalid claim: sub"),
        ({"name": None}, "missing claim: name"),
        ({"name": "   "}, "invalid claim: name"),
        ({"name": "n" * 121}, "invalid claim: name"),
        ({"email": 7}, "invalid claim: email"),
    ],
)
async def test_application_claims(overrides: dict[str, Any], message: str) -> None:
    async with verifier_for(make_settings()) as verifier:
        assert await rejection(verifier, hs_token(claims(**overrides))) == message


@pytest.mark.asyncio
@pytest.mark.parametrize("role", list(Role))
async def test_every_role_is_accepted(role: Role) -> None:
    async with verifier_for(make_settings()) as verifier:
        got = await verifier.verify(
            hs_token(claims(role=role.value.title(), sub="u" * 128))
        )
    assert got.role is role
    assert got.email is None


# --- parse_bearer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("  BEARER   abc  ", "abc"),
    ],
)
def test_parse_bearer_accepts(value: str, expected: str) -> None:
    assert parse_bearer(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("   ", "missing bearer token"),
        ("Bearer", "malformed authorization header"),
        ("Basic dXNlcjpwYXNz", "malformed authorization header"),
        ("Bearer a b", "malformed authorization header"),
        ("abc.def.ghi", "malformed authorization header"),
    ],
)
def test_parse_bearer_rejects(value: str | None, message: str) -> None:
    with pytest.raises(AuthError, match=f"^{message}$"):
        parse_bearer(value)


# --- dev tokens ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_dev_token_round_trip() -> None:
    settings = make_settings(
        jwt_algorithm="HS384", jwt_issuer="dev-issuer", jwt_audience="collab"
    )
    before = datetime.now(UTC)
    token = issue_dev_token(
        settings,
        user_id="dev-1",
        name=" Dr A ",
        role=Role.ADMIN,
        email="a@b.c",
        ttl=timedelta(hours=2),
    )
    async with verifier_for(settings) as verifier:
        got = await verifier.verify(token)
    assert (got.user_id, got.display_name, got.role, got.email) == (
        "dev-1",
        "Dr A",
        Role.ADMIN,
        "a@b.c",
    )
    assert before + timedelta(hours=2) - timedelta(seconds=5) <= got.expires_at
    assert got.expires_at <= datetime.now(UTC) + timedelta(hours=2)


def test_dev_tokens_refused_in_production() -> None:
    with pytest.raises(ValueError, match="production"):
        issue_dev_token(
            make_settings(environment="production"),
            user_id="u",
            name="n",
            role=Role.ADMIN,
        )


def test_slug_user_id() -> None:
    assert slug_user_id("Dr A") == "dev-dr-a"
    assert slug_user_id("  Ünïcødé  Nàme! ") == "dev-unicde-name"
    assert slug_user_id("!!!") == "dev-user"


@pytest.mark.asyncio
async def test_cli_prints_a_token_that_verifies() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("JWT_")}
    env.update(
        {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET, "JWT_AUDIENCE": "collab"}
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *(
            "-m",
            "auth.dev_token",
            "--role",
            "DOCTOR",
            "--name",
            "Dr A",
            "--ttl-hours",
            "1",
        ),
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    token = stdout.decode().strip()
    assert token.count(".") == 2 and "\n" not in token
    async with verifier_for(make_settings(jwt_audience="collab")) as verifier:
        got = await verifier.verify(token)
    assert (got.user_id, got.display_name, got.role) == (
        "dev-dr-a",
        "Dr A",
        Role.DOCTOR,
    )

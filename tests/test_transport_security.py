"""Production serves only TLS: its own certificate, or behind a proxy it trusts (whose
X-Forwarded-Proto it believes); plain http/ws from anywhere else is refused with
HTTPS_REQUIRED (health probes excepted); HTTPS responses carry HSTS; Redis over TLS
(rediss://) works. Real certificates (a throwaway CA), real TLS."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from websockets.exceptions import InvalidStatus

from tests.certs import Certs, make_certs
from tests.conftest import SECRET, make_settings
from tests.harness import LiveServer
from tests.processes import RedisServer
from tests.wsclient import WSClient, bearer

ME = "{ me { id } }"
HSTS = "max-age=31536000; includeSubDomains"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def serve(tmp_path_factory: pytest.TempPathFactory, name: str, **overrides: object
          ) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp(name), environment="production",
                             **overrides)
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_tls(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[LiveServer]:
    yield from serve(tmp_path_factory, "tls", tls_cert_file=certs.cert, tls_key_file=certs.key)


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve(tmp_path_factory, "proxied", forwarded_allow_ips=["127.0.0.1"])


@pytest.fixture(scope="module")
def other_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve(tmp_path_factory, "elsewhere", forwarded_allow_ips=["10.9.9.9"])


def token(live: LiveServer) -> str:
    """Signed by hand: development tokens are never issued in production."""
    now = int(time.time())
    claims = {"sub": "doctor-tls", "name": "Dr Tls", "role": "doctor", "iat": now,
              "exp": now + 600}
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(SECRET),
                      algorithms=["HS256"])


async def graphql(client: httpx.AsyncClient, live: LiveServer,
                  headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("/graphql", json={"query": ME}, headers={
        "authorization": f"Bearer {token(live)}", **(headers or {})})


async def test_own_certificate_serves_https_and_wss_with_hsts(own_tls: LiveServer,
                                                              certs: Certs) -> None:
    context = ssl.create_default_context(cafile=str(certs.ca))
    async with httpx.AsyncClient(base_url=own_tls.url, verify=context) as client:
        response = await graphql(client, own_tls)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == {"me": {"id": "doctor-tls"}}
        assert response.headers["strict-transport-security"] == HSTS
    socket = await WSClient.open(own_tls.ws_url, ssl=context)
    await socket.init(bearer(token(own_tls)))
    await socket.subscribe("q", ME)
    assert (await socket.next_message(id="q"))["payload"] == {"data": {"me": {
        "id": "doctor-tls"}}}
    await socket.close()
    plain = f"http://127.0.0.1:{own_tls.port}/graphql"  # no TLS on a TLS port: no answer
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.HTTPError):
            await client.post(plain, json={"query": ME})


async def test_behind_a_trusted_proxy_only_what_came_over_tls(behind_proxy: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=behind_proxy.url) as client:
        secure = await graphql(client, behind_proxy, {"x-forwarded-proto": "https"})
        assert secure.status_code == 200 and secure.json()["data"]["me"]
        assert secure.headers["strict-transport-security"] == HSTS
        for headers in ({}, {"x-forwarded-proto": "http"}):
            refused = await graphql(client, behind_proxy, headers)
            assert refused.status_code == 403
            assert refused.json()["errors"][0]["extensions"]["code"] == "HTTPS_REQUIRED"
            assert "strict-transport-security" not in refused.headers
        assert (await client.get("/readyz")).status_code == 200  # probes need no TLS
        assert (await client.get("/healthz")).status_code == 200
    socket = await WSClient.open(behind_proxy.ws_url, headers={"x-forwarded-proto": "https"})
    await socket.init(bearer(token(behind_proxy)))
    await socket.close()
    with pytest.raises(InvalidStatus) as refused_ws:
        await WSClient.open(behind_proxy.ws_url)
    assert refused_ws.value.response.status_code == 403


async def test_a_proxy_not_listed_is_not_believed(other_proxy: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=other_proxy.url) as client:
        response = await graphql(client, other_proxy, {"x-forwarded-proto": "https"})
    assert response.status_code == 403
    assert response.json()["errors"][0]["extensions"]["code"] == "HTTPS_REQUIRED"


@pytest.mark.parametrize(("overrides", "variable"), [
    ({}, "TLS_CERT_FILE"),
    ({"tls_cert_file": "CERT"}, "TLS_CERT_FILE"),
    ({"tls_cert_file": "CERT", "tls_key_file": "/no/such/key.pem"}, "TLS_KEY_FILE"),
])
def test_production_refuses_to_start_without_tls(tmp_path: Path, certs: Certs,
                                                 overrides: dict[str, object],
                                                 variable: str) -> None:
    values = {k: certs.cert if v == "CERT" else Path(str(v)) for k, v in overrides.items()}
    with pytest.raises(ValueError, match=f"{variable}:"):
        make_settings(tmp_path, environment="production", **values)


async def test_rediss_carries_room_events_and_presence(tmp_path: Path, certs: Certs) -> None:
    """REDIS_URL=rediss://...: the pub/sub and presence connections speak TLS."""
    redis = RedisServer(tmp_path / "redis.log", tls=certs).start()
    try:
        url = f"rediss://127.0.0.1:{redis.port}/0?ssl_ca_certs={certs.ca}"
        server = LiveServer(make_settings(tmp_path / "graph", redis_url=url)).start()
        try:
            assert server.call(server.services.hub.pubsub.redis.ping())
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.get("/readyz")).status_code == 200
        finally:
            server.stop()
    finally:
        redis.stop()

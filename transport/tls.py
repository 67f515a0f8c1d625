"""Transport security at the edge of the app: in production every request must have come
over TLS (served by uvicorn itself with TLS_CERT_FILE/TLS_KEY_FILE, or terminated by a proxy
listed in FORWARDED_ALLOW_IPS, which says so with X-Forwarded-Proto: https: uvicorn turns that
into the request's scheme); plain http and ws are refused before anything else runs, except
the health probes (they carry nothing). HTTPS responses carry HSTS."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from settings import Settings

log = logging.getLogger(__name__)
UNGUARDED = frozenset({"/healthz", "/readyz"})
SECURE = frozenset({"https", "wss"})
REFUSAL = orjson.dumps({"errors": [{
    "message": "this service accepts only HTTPS (and WSS): use https:// or wss://",
    "extensions": {"code": "HTTPS_REQUIRED"}}]})


class TransportSecurity:
    def __init__(self, app: Any, *, required: bool, hsts_max_age: int) -> None:
        self.app = app
        self.required = required
        self.hsts = (b"max-age=%d; includeSubDomains" % hsts_max_age) if hsts_max_age else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") in SECURE
        if self.required and not secure and scope.get("path") not in UNGUARDED:
            await _refuse(scope, send)
            return
        if secure and self.hsts is not None and scope["type"] == "http":
            send = _with_hsts(send, self.hsts)
        await self.app(scope, receive, send)


async def _refuse(scope: dict[str, Any], send: Any) -> None:
    if scope["type"] == "websocket":  # closed before the handshake: the client sees 403
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "http.response.start", "status": 403, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(REFUSAL))]})
    await send({"type": "http.response.body", "body": REFUSAL})


def _with_hsts(send: Any, value: bytes) -> Any:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []),
                                              (b"strict-transport-security", value)]}
        await send(message)

    return sending


def serving_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS and proxy settings (used by app.main and the test harness)."""
    options: dict[str, Any] = {
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips) or "",
    }
    if settings.tls_cert_file is not None:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        options["ssl_keyfile"] = str(settings.tls_key_file)
    return options


def log_transport_security(settings: Settings) -> None:
    if settings.serves_tls:
        log.info("TLS: serving https/wss with %s", settings.tls_cert_file)
    if settings.forwarded_allow_ips:
        log.info("TLS: X-Forwarded-Proto/-For believed from %s",
                 ", ".join(settings.forwarded_allow_ips))
    if settings.is_production and settings.allow_insecure_http:
        log.warning("TLS: ALLOW_INSECURE_HTTP=true: plain http and ws are accepted")

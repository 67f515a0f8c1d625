"""The messages of graphql-transport-ws as this service reads them: which shapes are well
formed, where a connection's token is, and how an operation's own error is coded."""

from __future__ import annotations

from typing import Any

from resolvers.errors import ServiceError


def coded(message: str, code: str) -> ServiceError:
    error = ServiceError(message)
    error.extensions = {"code": code}
    return error


def bearer_of(params: dict[str, Any] | None) -> str | None:
    """The `Authorization` value of a connection_init payload (`authToken` as well)."""
    params = params or {}
    header = params.get("authorization") or params.get("Authorization")
    if header is None and isinstance(params.get("authToken"), str):
        header = f"Bearer {params['authToken']}"
    return header if isinstance(header, str) else None


def well_formed(message: Any) -> bool:
    """The shapes graphql-transport-ws defines (unknown types are rejected by strawberry)."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return False
    kind = message["type"]
    if kind in ("subscribe", "complete") and not isinstance(message.get("id"), str):
        return False
    if kind != "subscribe":
        return True
    payload = message.get("payload")
    return (isinstance(payload, dict) and isinstance(payload.get("query"), str)
            and isinstance(payload.get("variables") or {}, dict)
            and isinstance(payload.get("operationName") or "", str)
            and isinstance(payload.get("extensions") or {}, dict))

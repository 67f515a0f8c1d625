"""The GraphQL request parameters of an HTTP request (GraphQL over HTTP §Request): from the
URL for GET, from an application/json body for POST, or from a multipart/form-data POST when
uploads are on (transport/uploads.py). Anything else is an HTTPProblem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request

from transport.errors import HTTPProblem, PayloadTooLarge
from transport.media import JSON
from transport.uploads import MULTIPART, UploadLimits, discard, is_multipart, read_multipart

PARAMETERS = ("query", "variables", "operationName", "extensions")


@dataclass(frozen=True, slots=True)
class GraphQLParams:
    query: str | None
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None
    # The temporary files of a multipart request's uploads: the caller deletes them
    # (transport.uploads.discard) once the request is answered.
    uploads: tuple[Path, ...] = ()


async def read_params(request: Request, max_bytes: int, uploads: UploadLimits | None = None
                      ) -> GraphQLParams:
    """`uploads`: multipart POSTs are read too (files up to its size), else only JSON."""
    if request.method == "GET":
        return _checked(_from_url(request))
    if uploads is not None and is_multipart(request):
        data, files = await read_multipart(request, max_bytes, uploads)
        try:
            return _checked(data, tuple(files))
        except HTTPProblem:
            discard(files)
            raise
    accepted = f"{JSON}, {MULTIPART}" if uploads is not None else JSON
    return _checked(await _from_body(request, max_bytes, accepted))


def _from_url(request: Request) -> dict[str, Any]:
    """`variables` and `extensions` are JSON text in the URL; empty values count as absent."""
    found: dict[str, Any] = {}
    for name, value in request.query_params.multi_items():
        if name not in PARAMETERS:
            continue
        if name in found:
            raise HTTPProblem(400, f"the `{name}` parameter is given more than once")
        if value == "":
            continue
        found[name] = _json(value, name) if name in ("variables", "extensions") else value
    return found


async def _from_body(request: Request, max_bytes: int, accepted: str) -> dict[str, Any]:
    """`accepted`: the media types a POST may have (415's Accept-Post)."""
    media, _, params = (request.headers.get("content-type") or "").partition(";")
    if media.strip().lower() != JSON or _charset(params) not in (None, "utf-8", "utf8"):
        raise HTTPProblem(415, "send the request body as application/json in utf-8",
                          headers={"accept-post": accepted})
    body = await _body(request, max_bytes)
    if not body.strip():
        raise HTTPProblem(400, "the request body is empty: send {\"query\": ...}")
    data = _json(body, "request body")
    if isinstance(data, list):
        raise HTTPProblem(400, "batched operations are not supported: send one at a time")
    if not isinstance(data, dict):
        raise HTTPProblem(400, "the request body must be a JSON object")
    return data


async def _body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) once it is larger than `max_bytes`: by its Content-Length
    before reading any of it, else as soon as that many bytes came (chunked bodies). The
    connection is closed after a refusal, so the rest is never read."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> HTTPProblem:
    return HTTPProblem(413, headers={"connection": "close"}, error=PayloadTooLarge(max_bytes))


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _json(text: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise HTTPProblem(400, f"the {what} is not valid JSON") from None


def _checked(data: dict[str, Any], uploads: tuple[Path, ...] = ()) -> GraphQLParams:
    """Types as the spec has them; null counts as absent."""
    for name, kind, label in (("query", str, "a string"), ("operationName", str, "a string"),
                              ("variables", dict, "an object"),
                              ("extensions", dict, "an object")):
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            raise HTTPProblem(400, f"the `{name}` parameter must be {label} or null")
    return GraphQLParams(query=data.get("query") or None, variables=data.get("variables"),
                         operation_name=data.get("operationName") or None,
                         extensions=data.get("extensions"), uploads=uploads)

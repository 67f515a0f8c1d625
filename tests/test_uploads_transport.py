"""Uploads over HTTP (GraphQL multipart request spec, transport/uploads.py): the CSRF guard,
bodies streamed to temporary files that are gone once the request is answered, 413 by
Content-Length before reading and while streaming, malformed requests 400.

The parser is exercised on a small Starlette app that calls read_params as the endpoint does
(httpx's ASGI transport), the limits and the clean-up on a live service with MAX_UPLOAD_MB=1
(real uvicorn, raw sockets where the timing of an answer matters)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import people_of, serving
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from transport.errors import HTTPProblem
from transport.http_params import read_params
from transport.uploads import LINGER_S, PREFLIGHT_HEADERS, UploadedFile, UploadLimits, discard

MIB = 1024 * 1024
BOUNDARY = "collab-test-boundary-7Hq2"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
PREFLIGHT = {**MULTIPART, "apollo-require-preflight": "true"}
TYPENAME = {"query": "{ __typename }", "variables": {"file": None}}
ONE_FILE = {"0": ["variables.file"]}
ORIGIN = "https://app.example"


def part(name: str, content: bytes, *, filename: str | None = None,
         content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\ncontent-disposition: {disposition}\r\n"
    if content_type is not None:
        head += f"content-type: {content_type}\r\n"
    return head.encode() + b"\r\n" + content + b"\r\n"


END = f"--{BOUNDARY}--\r\n".encode()


def form(operations: Any, mapping: Any, files: dict[str, bytes] | None = None) -> bytes:
    """A multipart body: JSON values are encoded, bytes sent as they are."""
    def encoded(value: Any) -> bytes:
        return value if isinstance(value, bytes) else json.dumps(value).encode()
    return (part("operations", encoded(operations)) + part("map", encoded(mapping))
            + b"".join(part(k, v, filename=f"{k}.bin", content_type="application/pdf")
                       for k, v in (files or {}).items()) + END)


def scratch(server: LiveServer) -> list[Path]:
    return list((server.settings.file_storage_dir / ".tmp").iterdir())


def errors(response: httpx.Response) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = response.json()["errors"]
    return found


# -- the parser, on a small app that calls read_params as transport/http.py does --------------


def describe(value: Any) -> Any:
    """Variables as the resolver sees them, files by what is in them (read during the request)."""
    if isinstance(value, UploadedFile):
        return {"filename": value.filename, "type": value.content_type, "size": value.size,
                "sha256": hashlib.sha256(value.path.read_bytes()).hexdigest(),
                "mode": value.path.stat().st_mode & 0o777}
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [describe(v) for v in value]
    return value


@pytest.fixture
async def parser(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app's scratch directory is tmp_path."""
    limits = UploadLimits(max_upload_bytes=256 * 1024, scratch_dir=tmp_path)

    async def endpoint(request: Request) -> JSONResponse:
        try:
            params = await read_params(request, 16 * 1024, limits)
        except HTTPProblem as problem:
            return JSONResponse({"errors": [problem.error.formatted]}, problem.status,
                                headers=problem.headers)
        try:
            return JSONResponse({"variables": describe(params.variables)})
        finally:
            discard(params.uploads)

    app = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://test") as client:
        yield client


async def test_files_reach_the_variables_on_disk(parser: httpx.AsyncClient,
                                                 tmp_path: Path) -> None:
    one, two, three = os.urandom(200_000), b"second", b""
    operations = {"query": "mutation M { x }", "variables": {"file": None,
                                                             "files": [None, None, None]}}
    mapping = {"a": ["variables.file"], "b": ["variables.files.0", "variables.files.2"],
               "c": ["variables.files.1"]}
    body = (part("operations", json.dumps(operations).encode())
            + part("map", json.dumps(mapping).encode())
            + part("a", one, filename="scan 1.pdf", content_type="application/pdf")
            + part("b", two, filename="n\u00e9e.txt", content_type="text/plain")
            + part("c", three, filename="") + END)
    response = await parser.post("/", content=body, headers=PREFLIGHT)
    assert response.status_code == 200, response.text
    variables = response.json()["variables"]
    assert variables["file"] == {"filename": "scan 1.pdf", "type": "application/pdf",
                                 "size": 200_000, "sha256": hashlib.sha256(one).hexdigest(),
                                 "mode": 0o600}
    assert variables["files"][0] == variables["files"][2]
    assert variables["files"][0]["filename"] == "n\u00e9e.txt"
    assert variables["files"][0]["sha256"] == hashlib.sha256(two).hexdigest()
    assert variables["files"][1]["size"] == 0
    assert variables["files"][1]["type"] == "application/octet-stream"
    assert list(tmp_path.iterdir()) == []


BAD_FORMS: dict[str, bytes] = {
    "operations not first": part("map", b"{}") + part("operations", b"{}") + END,
    "map missing": part("operations", json.dumps(TYPENAME).encode()) + END,
    "map not second": (part("operations", json.dumps(TYPENAME).encode())
                       + part("0", b"x", filename="a") + END),
    "operations not JSON": form(b"{query", ONE_FILE, {"0": b"x"}),
    "operations batched": form([TYPENAME], {"0": ["0.variables.file"]}, {"0": b"x"}),
    "map not JSON": form(TYPENAME, b"[oops", {"0": b"x"}),
    "map not an object": form(TYPENAME, ["variables.file"], {"0": b"x"}),
    "map entry not a list": form(TYPENAME, {"0": "variables.file"}, {"0": b"x"}),
    "no such variable": form(TYPENAME, {"0": ["variables.other"]}, {"0": b"x"}),
    "no such index": form({**TYPENAME, "variables": {"files": [None]}},
                          {"0": ["variables.files.1"]}, {"0": b"x"}),
    "not under variables": form(TYPENAME, {"0": ["query"]}, {"0": b"x"}),
    "variables itself": form(TYPENAME, {"0": ["variables"]}, {"0": b"x"}),
    "not a null there": form({**TYPENAME, "variables": {"file": "text"}}, ONE_FILE,
                             {"0": b"x"}),
    "two files, one place": form(TYPENAME, {"0": ["variables.file"], "1": ["variables.file"]},
                                 {"0": b"x", "1": b"y"}),
    "eleven files": form({**TYPENAME, "variables": {"files": [None] * 11}},
                         {str(i): [f"variables.files.{i}"] for i in range(11)},
                         {str(i): b"x" for i in range(11)}),
    "a part not in the map": form(TYPENAME, ONE_FILE, {"0": b"x", "1": b"y"}),
    "a file of the map not sent": form(TYPENAME, ONE_FILE),
    "a file sent twice": form(TYPENAME, ONE_FILE, {"0": b"x"})[:-len(END)]
    + part("0", b"y", filename="again") + END,
    "no closing boundary": form(TYPENAME, ONE_FILE, {"0": b"x"})[:-len(END)],
    "not multipart inside": b"just some bytes",
}


@pytest.mark.parametrize("name", list(BAD_FORMS))
async def test_malformed_forms_are_400_and_leave_nothing(parser: httpx.AsyncClient,
                                                         tmp_path: Path, name: str) -> None:
    response = await parser.post("/", content=BAD_FORMS[name], headers=PREFLIGHT)
    assert response.status_code == 400, response.text
    assert errors(response)[0]["extensions"] == {"code": "BAD_REQUEST"}
    assert list(tmp_path.iterdir()) == []


async def test_a_content_type_without_boundary_is_400(parser: httpx.AsyncClient) -> None:
    response = await parser.post("/", content=form(TYPENAME, ONE_FILE, {"0": b"x"}),
                                 headers={"content-type": "multipart/form-data",
                                          "x-requested-with": "XMLHttpRequest"})
    assert response.status_code == 400 and "boundary" in errors(response)[0]["message"]


async def test_operations_over_the_body_limit_is_413(parser: httpx.AsyncClient) -> None:
    big = {**TYPENAME, "extensions": {"pad": "x" * 20_000}}
    response = await parser.post("/", content=form(big, ONE_FILE, {"0": b"x"}),
                                 headers=PREFLIGHT)
    assert response.status_code == 413
    assert errors(response)[0]["extensions"] == {"code": "PAYLOAD_TOO_LARGE",
                                                 "maxBytes": 16 * 1024}


# -- the live service, MAX_UPLOAD_MB=1 -------------------------------------------------------


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, "uploads", max_upload_mb=1, cors_origins=[ORIGIN]) as server:
        yield server


async def post(server: LiveServer, content: Any, headers: dict[str, str], method: str = "POST"
               ) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        return await client.request(method, "/graphql", content=content,
                                    headers={"accept": "application/json", **headers})


@pytest.mark.parametrize("headers", [MULTIPART, {**MULTIPART, "apollo-require-preflight": ""},
                                     {**MULTIPART, "x-requested-with": ""}])
async def test_without_a_preflight_header_nothing_is_read(uploads: LiveServer,
                                                          headers: dict[str, str]) -> None:
    response = await post(uploads, form(TYPENAME, ONE_FILE, {"0": b"%PDF-1.4"}), headers)
    assert response.status_code == 400
    error = errors(response)[0]
    assert error["extensions"] == {"code": "BAD_REQUEST"}
    assert "Apollo-Require-Preflight" in error["message"]
    assert response.headers["connection"] == "close"
    assert scratch(uploads) == []


@pytest.mark.parametrize("header", ["apollo-require-preflight", "graphql-require-preflight",
                                    "x-requested-with"])
async def test_a_multipart_request_runs_and_its_files_are_gone_after(
        uploads: LiveServer, header: str) -> None:
    files = {"0": os.urandom(MIB - 1), "1": b"two"}
    operations = {"query": "{ __typename }", "variables": {"files": [None, None]}}
    response = await post(uploads, form(operations, {"0": ["variables.files.0"],
                                                     "1": ["variables.files.1"]}, files),
                          {**MULTIPART, header: "1"})
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__typename": "Query"}}
    assert scratch(uploads) == []


async def test_a_browser_may_send_the_preflight_headers(uploads: LiveServer) -> None:
    response = await post(uploads, None, {
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": ",".join(PREFLIGHT_HEADERS)}, method="OPTIONS")
    assert response.status_code == 200, response.text
    allowed = response.headers["access-control-allow-headers"].lower()
    assert all(header in allowed for header in PREFLIGHT_HEADERS)


async def test_json_posts_are_unchanged_and_other_types_415(uploads: LiveServer) -> None:
    response = await post(uploads, json.dumps({"query": "{ __typename }"}),
                          {"content-type": "application/json"})
    assert (response.status_code, response.json()) == (200, {"data": {"__typename": "Query"}})
    response = await post(uploads, b"{ __typename }", {"content-type": "text/plain"})
    assert response.status_code == 415
    assert response.headers["accept-post"] == "application/json, multipart/form-data"


async def test_malformed_requests_are_400_on_the_service(uploads: LiveServer) -> None:
    for body in (BAD_FORMS["map missing"], BAD_FORMS["no such variable"],
                 BAD_FORMS["operations not JSON"], BAD_FORMS["a part not in the map"]):
        response = await post(uploads, body, PREFLIGHT)
        assert response.status_code == 400, response.text
        assert errors(response)[0]["extensions"] == {"code": "BAD_REQUEST"}
    assert scratch(uploads) == []


async def raw_answer(server: LiveServer, head: bytes) -> tuple[int, dict[str, str], Any]:
    """Sends only `head`; the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head)
        lines = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        status, *fields = lines.strip().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in fields)
        content = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        return int(status.split()[1]), headers, json.loads(content)
    finally:
        writer.close()


def request_head(**headers: str) -> bytes:
    lines = ["POST /graphql HTTP/1.1", "host: x", "accept: application/json",
             f"content-type: {MULTIPART['content-type']}", "apollo-require-preflight: 1",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
        uploads: LiveServer) -> None:
    limit = MIB + uploads.settings.request_max_bytes
    # Only the head is sent, none of the 50 MB it announces: the answer comes anyway.
    status, headers, body = await raw_answer(uploads, request_head(content_length=str(50 * MIB)))
    assert (status, headers["connection"]) == (413, "close")
    assert body["errors"][0]["extensions"] == {"code": "PAYLOAD_TOO_LARGE", "maxBytes": limit}


BLOCK = os.urandom(64 * 1024)


async def file_parts(files: int, size: int) -> AsyncIterator[bytes]:
    """A multipart body of `files` files of `size` bytes, streamed (no Content-Length)."""
    operations = {"query": "{ __typename }", "variables": {"files": [None] * files}}
    mapping = {str(i): [f"variables.files.{i}"] for i in range(files)}
    yield part("operations", json.dumps(operations).encode()) + part(
        "map", json.dumps(mapping).encode())
    for i in range(files):
        yield part(str(i), b"", filename="big.bin")[:-2]
        for _ in range(size // len(BLOCK)):
            yield BLOCK
        yield b"\r\n"
    yield END


@pytest.mark.parametrize(("files", "size", "limit"), [
    pytest.param(1, 4 * MIB, MIB, id="a file over MAX_UPLOAD_MB"),
    # Each within it, but together past MAX_UPLOAD_MB + REQUEST_MAX_BYTES (3 MiB).
    pytest.param(4, MIB, 3 * MIB, id="the body over its limit")])
async def test_a_streamed_body_is_413_once_past_a_limit(uploads: LiveServer, files: int,
                                                        size: int, limit: int) -> None:
    # httpx sends a generator chunked, without Content-Length: only counting can stop it.
    response = await post(uploads, file_parts(files, size), PREFLIGHT)
    assert (response.status_code, response.headers["connection"]) == (413, "close")
    error = errors(response)[0]
    assert error["extensions"] == {"code": "PAYLOAD_TOO_LARGE", "maxBytes": limit}
    assert ("file" in error["message"]) == (files == 1)  # which limit it was
    assert scratch(uploads) == []


async def test_a_refused_body_is_not_read_for_long(uploads: LiveServer) -> None:
    """A body that keeps coming after its refusal is dropped for LINGER_S, then the service
    closes the connection (the sender, still sending, sees it reset)."""
    _, writer = await asyncio.open_connection("127.0.0.1", uploads.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        writer.write(request_head(transfer_encoding="chunked"))
        async for data in file_parts(1, 100_000 * MIB):
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await asyncio.wait_for(writer.drain(), 10)
            if loop.time() - started > LINGER_S + 8:
                break
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    assert loop.time() - started < LINGER_S + 8, "the service kept reading the body"
    assert scratch(uploads) == []


# -- end to end: uploadFile -------------------------------------------------------------------

FILE = "name size sha256 status downloadUrl"
UPLOAD = f"""mutation($room: ID!, $file: Upload!) {{
  uploadFile(roomId: $room, file: $file) {{ {FILE} }} }}"""
UPLOAD_TWO = f"""mutation($room: ID!, $a: Upload!, $b: Upload!) {{
  a: uploadFile(roomId: $room, file: $a) {{ {FILE} }}
  b: uploadFile(roomId: $room, file: $b) {{ {FILE} }} }}"""
ROOM_FILES = "query($room: ID!) { room(id: $room) { files { edges { node { name } } } } }"


def pdf(size: int) -> bytes:
    return b"%PDF-1.4\n" + os.urandom(size) + b"\n%%EOF\n"


async def send(who: Persona, operations: dict[str, Any], mapping: dict[str, list[str]],
               files: dict[str, tuple[str, bytes]], **headers: str) -> httpx.Response:
    """As apollo-upload-client sends it (httpx writes the form, with a Content-Length)."""
    return await who.client.post(
        "/graphql", headers={"authorization": f"Bearer {who.token}",
                             **{k.replace("_", "-"): v for k, v in headers.items()}},
        data={"operations": json.dumps(operations), "map": json.dumps(mapping)},
        files={k: (name, data, "application/pdf") for k, (name, data) in files.items()})


async def test_a_3_mb_upload_reaches_the_resolver_whole(people: People, fresh: LiveServer
                                                        ) -> None:
    doctor = people.make_user("doctor")
    room = await make_room(doctor)
    data = pdf(3 * MIB)
    response = await send(doctor, {"query": UPLOAD, "variables": {"room": room["id"],
                                                                  "file": None}},
                          ONE_FILE, {"0": ("scan.pdf", data)}, apollo_require_preflight="1")
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    file = body["data"]["uploadFile"]
    assert (file["name"], file["size"]) == ("scan.pdf", len(data))
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    downloaded = await doctor.client.get(file["downloadUrl"])
    assert hashlib.sha256(downloaded.content).hexdigest() == file["sha256"]
    assert scratch(fresh) == []


async def test_two_files_in_one_request(people: People, fresh: LiveServer) -> None:
    doctor = people.make_user("doctor")
    room = await make_room(doctor)
    one, two = pdf(100_000), pdf(200_000)
    operations = {"query": UPLOAD_TWO, "variables": {"room": room["id"], "a": None, "b": None}}
    response = await send(doctor, operations, {"1": ["variables.a"], "2": ["variables.b"]},
                          {"1": ("one.pdf", one), "2": ("two.pdf", two)},
                          graphql_require_preflight="1")
    data = response.json()["data"]
    assert [data["a"]["name"], data["b"]["name"]] == ["one.pdf", "two.pdf"]
    assert [data["a"]["sha256"], data["b"]["sha256"]] == [hashlib.sha256(one).hexdigest(),
                                                          hashlib.sha256(two).hexdigest()]
    assert scratch(fresh) == []


async def test_refused_uploads_store_nothing(uploads: LiveServer, tmp_path: Path) -> None:
    async with people_of(uploads) as crowd:
        doctor = crowd.make_user("doctor")
        room = await make_room(doctor)
        operations = {"query": UPLOAD, "variables": {"room": room["id"], "file": None}}
        small, big = ("a.pdf", pdf(1000)), ("b.pdf", pdf(MIB))
        refused = [await send(doctor, operations, ONE_FILE, {"0": small}),  # no preflight
                   await send(doctor, operations, ONE_FILE, {"0": big}, x_requested_with="1")]
        assert [r.status_code for r in refused] == [400, 413]
        listed = await doctor.gql(ROOM_FILES, room=room["id"])
        assert listed["room"]["files"]["edges"] == []
        assert scratch(uploads) == []
        blobs = [p for p in uploads.settings.file_storage_dir.rglob("*")
                 if p.is_file() and p.name != ".master-key"]
        assert blobs == []

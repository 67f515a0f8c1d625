"""Shared files end to end over real HTTP, with a real clamd: multipart uploads (type sniffed,
scanned, encrypted at rest), EICAR refused, the scanner down then back (PENDING_SCAN, rescan,
the uploader told), signed download URLs (Range, headers, foreign/expired/altered/deleted
links all 404, a tampered blob never served), the room's list, attachments, deletion and
DICOM de-identification."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from files.keys import master_key
from files.links import Links
from tests.clamd import ClamdServer, eicar
from tests.conftest import make_settings
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room

PDF = b"%PDF-1.4\n" + os.urandom(3 * 1024 * 1024) + b"\n%%EOF\n"
FILE = "id name contentType size sha256 status deidentified downloadUrl uploadedBy { id }"
UPLOAD = f"""
mutation($room: ID!, $file: Upload!, $deid: Boolean) {{
  uploadFile(roomId: $room, file: $file, deidentify: $deid) {{ {FILE} }}
}}"""
FILES = f"query($room: ID!) {{ room(id: $room) {{ files {{ edges {{ node {{ {FILE} }} }} }} }} }}"
DELETE = "mutation($id: ID!) { deleteFile(id: $id) { id status } }"
SEND = ("mutation($room: ID!, $input: SendMessageInput!) { sendMessage(roomId: $room, "
        "input: $input) { id attachments { id name } } }")


@pytest.fixture(scope="module")
def files_live(tmp_path_factory: pytest.TempPathFactory,
               clamd_server: ClamdServer) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("files"), file_scanning="on",
                             clamav_socket=clamd_server.socket_path)
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture
async def crowd(files_live: LiveServer) -> AsyncIterator[People]:
    people = People(files_live.settings, files_live.url)
    yield people
    await people.aclose()


async def upload(who: Persona, room_id: str, name: str, data: bytes, *,
                 deidentify: bool = False, preflight: bool = True) -> httpx.Response:
    operations = {"query": UPLOAD, "variables": {"room": room_id, "file": None,
                                                 "deid": deidentify}}
    headers = {"authorization": f"Bearer {who.token}"}
    if preflight:
        headers["apollo-require-preflight"] = "true"
    return await who.client.post("/graphql", headers=headers, data={
        "operations": json.dumps(operations), "map": json.dumps({"0": ["variables.file"]})},
        files={"0": (name, data, "application/octet-stream")})


async def uploaded(who: Persona, room_id: str, name: str, data: bytes,
                   **kw: Any) -> dict[str, Any]:
    response = await upload(who, room_id, name, data, **kw)
    body = response.json()
    assert response.status_code == 200 and not body.get("errors"), body
    file: dict[str, Any] = body["data"]["uploadFile"]
    return file


async def refused(who: Persona, room_id: str, name: str, data: bytes) -> dict[str, Any]:
    body = (await upload(who, room_id, name, data)).json()
    error: dict[str, Any] = body["errors"][0]
    return error


async def pair(crowd: People) -> tuple[Persona, Persona, Persona, str]:
    host, member, outsider = (crowd.make_user("doctor") for _ in range(3))
    await register(host, member, outsider)
    room = await make_room(host, invite=[member])
    return host, member, outsider, room["id"]


async def test_upload_scan_encrypt_and_download(crowd: People, files_live: LiveServer) -> None:
    host, member, outsider, room_id = await pair(crowd)
    file = await uploaded(member, room_id, "../../etc/scan\u202ereport.pdf", PDF)
    assert file["name"] == "scanreport.pdf" and file["contentType"] == "application/pdf"
    assert (file["size"], file["status"]) == (len(PDF), "CLEAN")
    assert file["sha256"] == hashlib.sha256(PDF).hexdigest()
    stored = files_live.settings.file_storage_dir / file["id"][:2] / file["id"]
    assert PDF[:64] not in stored.read_bytes()  # encrypted at rest
    async with httpx.AsyncClient() as anyone:  # the link itself is the credential
        whole = await anyone.get(file["downloadUrl"])
        assert whole.status_code == 200 and whole.content == PDF
        headers = whole.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-disposition"].startswith("attachment;")
        assert headers["cache-control"] == "private, no-store"
        assert headers["referrer-policy"] == "no-referrer"
        assert "sandbox" in headers["content-security-policy"]
        part = await anyone.get(file["downloadUrl"], headers={"range": "bytes=1048570-1048585"})
        assert part.status_code == 206 and part.content == PDF[1048570:1048586]
        assert part.headers["content-range"] == f"bytes 1048570-1048585/{len(PDF)}"
        tail = await anyone.get(file["downloadUrl"], headers={"range": "bytes=-7"})
        assert tail.content == PDF[-7:]
        bad = await anyone.get(file["downloadUrl"], headers={"range": f"bytes={len(PDF)}-"})
        assert bad.status_code == 416
    listed = (await host.gql(FILES, room=room_id))["room"]["files"]["edges"]
    assert [e["node"]["id"] for e in listed] == [file["id"]]
    assert (await outsider.gql(FILES, room=room_id))["room"] is None  # private: unseen


async def test_refusals(crowd: People, files_live: LiveServer) -> None:
    host, _, outsider, room_id = await pair(crowd)
    html = await refused(host, room_id, "x.png", b"<html><script>alert(1)</script></html>")
    assert html["extensions"]["code"] == "UNSUPPORTED_FILE_TYPE"
    svg = await refused(host, room_id, "x.svg", b'<svg xmlns="http://www.w3.org/2000/svg">'
                                                b"<script>alert(1)</script></svg>")
    assert svg["extensions"]["code"] == "UNSUPPORTED_FILE_TYPE"
    infected = await refused(host, room_id, "report.pdf", b"%PDF-1.4\n" + eicar() + b"\n")
    assert infected["extensions"]["code"] == "INFECTED"
    assert (await refused(outsider, room_id, "a.pdf", PDF))["extensions"]["code"] == (
        "NOT_FOUND")
    empty = await refused(host, room_id, "e.pdf", b"")
    assert empty["extensions"]["code"] == "BAD_USER_INPUT"
    unguarded = await upload(host, room_id, "a.pdf", PDF, preflight=False)
    assert unguarded.status_code == 400
    assert (await host.gql(FILES, room=room_id))["room"]["files"]["edges"] == []
    blobs = files_live.settings.file_storage_dir
    leftovers = [p for p in blobs.rglob("*") if p.is_file() and p.name != ".master-key"
                 and p.parent.name != ".tmp"]
    assert all(p.parent.name != ".tmp" for p in leftovers)


async def test_links_are_personal_short_and_checked_every_time(
        crowd: People, files_live: LiveServer) -> None:
    host, member, _, room_id = await pair(crowd)
    file = await uploaded(host, room_id, "a.pdf", PDF)
    url = file["downloadUrl"]
    token = url.rsplit("/", 1)[1]
    base = url.rsplit("/", 1)[0]
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 200
        # Someone else who says who they are cannot use the host's link; the host can.
        as_member = {"authorization": f"Bearer {member.token}"}
        assert (await client.get(url, headers=as_member)).status_code == 404
        as_host = {"authorization": f"Bearer {host.token}"}
        assert (await client.get(url, headers=as_host)).status_code == 200
        altered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        assert (await client.get(f"{base}/{altered}")).status_code == 404
        assert (await client.get(f"{base}/nonsense")).status_code == 404
        # The member's own link stops working once they leave the room.
        theirs = (await member.gql(FILES, room=room_id))["room"]["files"]["edges"][0]["node"]
        assert (await client.get(theirs["downloadUrl"])).status_code == 200
        await member.gql("mutation($id: ID!) { leaveRoom(id: $id) { id } }", id=room_id)
        assert (await client.get(theirs["downloadUrl"])).status_code == 404
        # Deleted: every link dies at once (a live file first, for a real test).
        file = await uploaded(host, room_id, "b.pdf", PDF)
        url = file["downloadUrl"]
        assert (await client.get(url)).status_code == 200
        assert (await host.gql(DELETE, id=file["id"]))["deleteFile"]["status"] == "DELETED"
        assert (await client.get(url)).status_code == 404
    # Expired: a link signed with the service's key, for this user, a second ago.
    old, _ = Links(master_key(files_live.settings), ttl=-1).issue(file["id"], host.id)
    async with httpx.AsyncClient(base_url=files_live.url) as client:
        assert (await client.get(old)).status_code == 404


async def test_a_tampered_blob_is_never_served(crowd: People, files_live: LiveServer) -> None:
    host, _, _, room_id = await pair(crowd)
    file = await uploaded(host, room_id, "a.pdf", PDF)
    stored = files_live.settings.file_storage_dir / file["id"][:2] / file["id"]
    raw = bytearray(stored.read_bytes())
    raw[200] ^= 0x01  # in the first segment
    stored.write_bytes(bytes(raw))
    async with httpx.AsyncClient() as client:
        assert (await client.get(file["downloadUrl"])).status_code == 404


async def test_the_scanner_down_then_back(crowd: People, files_live: LiveServer,
                                          clamd_server: ClamdServer) -> None:
    host, _, _, room_id = await pair(crowd)
    with clamd_server.down():
        waiting = await uploaded(host, room_id, "later.pdf", PDF)
        assert waiting["status"] == "PENDING_SCAN"
        async with httpx.AsyncClient() as client:  # not downloadable until scanned
            assert (await client.get(waiting["downloadUrl"])).status_code == 404
        bad = await uploaded(host, room_id, "worse.pdf", b"%PDF-1.4\n" + eicar())
        assert bad["status"] == "PENDING_SCAN"
    done = await asyncio.to_thread(files_live.call,
                                   files_live.services.files.rescan_pending())
    assert done == 2
    await asyncio.to_thread(files_live.call, files_live.services.inbox.drain())
    listed = (await host.gql(FILES, room=room_id))["room"]["files"]["edges"]
    assert [(e["node"]["name"], e["node"]["status"]) for e in listed] == [
        ("later.pdf", "CLEAN")]  # the infected one is gone, its bytes destroyed
    assert not (files_live.settings.file_storage_dir / bad["id"][:2] / bad["id"]).exists()
    told = (await host.gql("{ notifications { edges { node { kind body refId } } } }"))
    scans = {e["node"]["refId"]: e["node"]["body"]
             for e in told["notifications"]["edges"] if e["node"]["kind"] == "FILE_SCANNED"}
    assert scans == {waiting["id"]: "clean: it can be downloaded",
                     bad["id"]: "refused: infected"}


async def test_attachments(crowd: People, files_live: LiveServer) -> None:
    host, member, _, room_id = await pair(crowd)
    mine = await uploaded(host, room_id, "mine.pdf", PDF)
    theirs = await uploaded(member, room_id, "theirs.pdf", PDF)
    sent = (await host.gql(SEND, room=room_id, input={
        "content": "see attached", "attachmentIds": [mine["id"]]}))["sendMessage"]
    assert sent["attachments"] == [{"id": mine["id"], "name": "mine.pdf"}]
    for ids in ([theirs["id"]], [mine["id"]], ["nope"]):  # not mine / taken / unknown
        body = await host.post(SEND, {"room": room_id, "input": {"content": "x",
                                                                 "attachmentIds": ids}})
        assert body["errors"][0]["extensions"]["field"] == "input.attachmentIds"


def dicom_file(path: Path) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName, ds.PatientID = "DOE^JANE", "MRN-4711"
    ds.PatientBirthDate, ds.InstitutionName = "19700101", "Saint Example Hospital"
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality = "OT"
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


async def test_dicom_is_deidentified_on_request(crowd: People, files_live: LiveServer,
                                                tmp_path: Path) -> None:
    host, _, _, room_id = await pair(crowd)
    data = dicom_file(tmp_path / "a.dcm")
    kept = await uploaded(host, room_id, "scan.dcm", data)
    assert kept["contentType"] == "application/dicom" and kept["deidentified"] is False
    clean = await uploaded(host, room_id, "scan.dcm", data, deidentify=True)
    assert clean["deidentified"] is True and clean["sha256"] != kept["sha256"]
    async with httpx.AsyncClient() as client:
        got = (await client.get(clean["downloadUrl"])).content
    for secret in (b"DOE^JANE", b"MRN-4711", b"19700101", b"Saint Example"):
        assert secret not in got
    assert pydicom.dcmread(io.BytesIO(got)).PatientIdentityRemoved == "YES"


async def test_deleted_files_are_destroyed_after_their_retention(
        crowd: People, files_live: LiveServer) -> None:
    host, _, _, room_id = await pair(crowd)
    file = await uploaded(host, room_id, "old.pdf", PDF)
    stored = files_live.settings.file_storage_dir / file["id"][:2] / file["id"]
    await host.gql(DELETE, id=file["id"])
    service = files_live.services.files
    assert await asyncio.to_thread(files_live.call, service.shred_expired()) == 0  # kept
    assert stored.exists()
    service.retention_ms = -1000  # as if FILE_RETENTION_DAYS had passed
    try:
        assert await asyncio.to_thread(files_live.call, service.shred_expired()) >= 1
    finally:
        service.retention_ms = files_live.settings.file_retention_days * 86_400_000
    assert not stored.exists()
    rows = await asyncio.to_thread(files_live.call, files_live.services.db.read_rows(
        "MATCH (f:File {id: $id}) RETURN f.wrappedKey AS key, f.status AS status",
        id=file["id"]))
    assert rows == [{"key": None, "status": "DELETED"}]

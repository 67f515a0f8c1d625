"""The file-handling core (files/): safe names, type sniffing with libmagic, chunked AES-GCM at
rest, the local blob store and DICOM de-identification, on files the tests build."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from files import crypto, dicom, names, sniff
from files.crypto import SEGMENT, KeyRing, Tampered, UnwrapFailed
from files.keys import master_key
from files.storage import LocalBlobStore
from settings import Settings

# ---------------------------------------------------------------- names


@pytest.mark.parametrize(("raw", "safe"), [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\doc\\scan.pdf", "scan.pdf"),
    ("a/b\\c/report final.pdf", "report final.pdf"),
    ("dir/", "file"),
    ("", "file"),
    ("..", "file"),
    ("...   ", "file"),
    (".bashrc", "bashrc"),
    (" . .x ray.png", "x ray.png"),
    ("re\x00po\x1brt\x7f\x85\x9f.pdf", "report.pdf"),
    ("line\nbreak\r.txt", "linebreak.txt"),
    ("invoice\u202efdp.exe", "invoicefdp.exe"),
    ("\u2066a\u2067b\u2068c\u2069\u202a\u202b\u202c\u202d.txt", "abc.txt"),
    ("\u202e", "file"),
    ("caf\u0065\u0301.txt", "caf\u00e9.txt"),
    ("cafe\x00\u0301.txt", "caf\u00e9.txt"),  # the control goes first, then NFC composes
    ("scan\ud800.pdf", "scan.pdf"),  # a lone surrogate (JSON can carry one)
])
def test_sanitize(raw: str, safe: str) -> None:
    assert names.sanitize(raw) == safe


@pytest.mark.parametrize("raw", [
    "é" * 200 + ".pdf",
    "Ä" * 300,
    "😀" * 100 + ".png",
    "a" * 254 + "😀.txt",
    "x" * 300 + "." + "y" * 40,  # an "extension" too long to be one
    "名" * 90 + "." + "名" * 4,
])
def test_sanitize_long_names(raw: str) -> None:
    safe = names.sanitize(raw)
    encoded = safe.encode()
    assert 0 < len(encoded) <= 255
    assert encoded.decode() == safe  # cut on a character boundary
    assert safe == unicodedata.normalize("NFC", safe)
    if raw.endswith((".pdf", ".png", ".txt")):
        assert safe.endswith(raw[-4:])
    assert names.sanitize(safe) == safe


# ---------------------------------------------------------------- sniff: files built here


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0"))
            + chunk(b"IEND", b""))


def jpeg() -> bytes:
    app0 = b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def mp4() -> bytes:
    ftyp = b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41"
    return struct.pack(">I", 8 + len(ftyp)) + b"ftyp" + ftyp + struct.pack(">I", 8) + b"free"


def webm() -> bytes:
    # EBML header: version 1, read version 1, max id 4, max size 8, DocType "webm", 4, 2.
    body = (bytes.fromhex("4286810142F7810142F2810442F381084282") + b"\x84webm"
            + bytes.fromhex("4287810442858102"))
    return (bytes.fromhex("1A45DFA3") + bytes([0x80 | len(body)]) + body
            + bytes.fromhex("18538067") + b"\x01" + b"\xff" * 7)


def zipped(entries: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in entries:
            archive.writestr(name, text)
    return buf.getvalue()


def ooxml(part: str, content_type: str) -> bytes:
    types = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.'
             'org/package/2006/content-types"><Default Extension="xml" ContentType="application/'
             f'xml"/><Override PartName="/{part}" ContentType="{content_type}"/></Types>')
    rels = '<?xml version="1.0"?><Relationships xmlns="urn:x"/>'
    return zipped([("[Content_Types].xml", types), ("_rels/.rels", rels), (part, "<x/>")])


def docx() -> bytes:
    return ooxml("word/document.xml", "application/vnd.openxmlformats-officedocument."
                 "wordprocessingml.document.main+xml")


def xlsx() -> bytes:
    return ooxml("xl/workbook.xml", "application/vnd.openxmlformats-officedocument."
                 "spreadsheetml.sheet.main+xml")


def dicom_dataset(**values: object) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "ELSEWHERE_CT1"
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(64))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds: Dataset | None = None) -> bytes:
    out = io.BytesIO()
    (ds or dicom_dataset(PatientName="Doe^John")).save_as(out, enforce_file_format=True)
    return out.getvalue()


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
ELF = b"\x7fELF\x02\x01\x01\0" + b"\0" * 8 + struct.pack("<HHI", 2, 0x3E, 1) + b"\0" * 40
TEXT = "Befund: Größe 3 cm.\nPlan: Kontrolle.\n".encode()
PE = b"MZ" + b"\x90" * 58 + struct.pack("<I", 64) + b"PE\0\0" + b"\0" * 200


@pytest.mark.parametrize(("build", "mime", "ext"), [
    (lambda: PDF, "application/pdf", "pdf"),
    (png, "image/png", "png"),
    (jpeg, "image/jpeg", "jpg"),
    (dicom_bytes, "application/dicom", "dcm"),
    (mp4, "video/mp4", "mp4"),
    (webm, "video/webm", "webm"),
    (docx, sniff.DOCX, "docx"),
    (xlsx, sniff.XLSX, "xlsx"),
    (lambda: TEXT, "text/plain", "txt"),
])
def test_allowed_types(build: Callable[[], bytes], mime: str, ext: str) -> None:
    detected = sniff.detect(build())
    assert detected == mime
    assert sniff.allowed(detected) and sniff.ALLOWED[detected] == ext


@pytest.mark.parametrize(("body", "mime"), [
    # The declared name or type plays no part: these bytes were "photo.png".
    (b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", "text/html"),
    (b"<script>alert(1)</script>\n", "text/html"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script>'
     b"</svg>", "image/svg+xml"),
    (ELF, "application/x-executable"),
    (PE, "application/vnd.microsoft.portable-executable"),
    (b"MZ" + b"\0" * 100, "application/x-dosexec"),
    (b"#!/bin/sh\nrm -rf ~\n", "text/x-shellscript"),
    (zipped([("notes.txt", "hello")]), "application/zip"),
    # Claims to be OOXML but has no word/, xl/ or ppt/ part.
    (zipped([("[Content_Types].xml", "<Types/>"), ("evil.exe", "MZ")]), "application/zip"),
    (b"", "application/x-empty"),
])
def test_refused_types(body: bytes, mime: str) -> None:
    assert sniff.detect(body) == mime
    assert not sniff.allowed(mime)


def test_inline_only_for_plain_media() -> None:
    assert [m for m in sniff.ALLOWED if sniff.inline_ok(m)] == ["image/png", "image/jpeg",
                                                               "video/mp4"]
    assert not sniff.inline_ok("image/svg+xml") and not sniff.inline_ok("text/html")


# ---------------------------------------------------------------- crypto

SIZE = 3 * SEGMENT + SEGMENT // 2
FILE_ID = "0f5c2a9e-6b1d-4c3e-9a7f-1d2e3f4a5b6c"


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing(os.urandom(32), "kek-1")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("plain") / "scan.bin"
    path.write_bytes(data)
    return path, data


@pytest.fixture
def sealed(tmp_path: Path, ring: KeyRing, plain: tuple[Path, bytes]) -> tuple[Path, bytes]:
    dek, wrapped = ring.new_data_key()
    blob = tmp_path / "blob"
    digest = crypto.encrypt_file(plain[0], blob, FILE_ID, dek)
    assert digest == hashlib.sha256(plain[1]).hexdigest()
    return blob, wrapped


def test_round_trip(sealed: tuple[Path, bytes], ring: KeyRing, plain: tuple[Path, bytes]) -> None:
    blob, wrapped = sealed
    dek = ring.unwrap(wrapped)
    assert b"".join(crypto.decrypt_all(blob, FILE_ID, dek)) == plain[1]
    assert crypto.plaintext_size(blob) == SIZE
    assert blob.stat().st_size == crypto.HEADER_BYTES + SIZE + 4 * crypto.TAG
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600
    assert blob.read_bytes()[:4] == b"CLB1"
    assert plain[1][:4096] not in blob.read_bytes()
    assert list(blob.parent.iterdir()) == [blob]  # no temporary file left behind


@pytest.mark.parametrize(("start", "end", "segments"), [
    (0, 0, 1),
    (0, 7, 1),
    (SEGMENT - 3, SEGMENT + 2, 2),
    (SEGMENT, SEGMENT, 1),
    (2 * SEGMENT - 1, 2 * SEGMENT, 2),
    (SEGMENT + 5, 3 * SEGMENT + 5, 3),
    (SIZE - 6, SIZE - 1, 1),
    (0, SIZE - 1, 4),
])
def test_range_reads(sealed: tuple[Path, bytes], ring: KeyRing, plain: tuple[Path, bytes],
                     start: int, end: int, segments: int) -> None:
    chunks = list(crypto.decrypt_range(sealed[0], FILE_ID, ring.unwrap(sealed[1]), start, end))
    assert len(chunks) == segments  # only the segments the range touches
    assert b"".join(chunks) == plain[1][start:end + 1]


def test_range_outside_the_file(sealed: tuple[Path, bytes], ring: KeyRing) -> None:
    dek = ring.unwrap(sealed[1])
    for start, end in [(SIZE, SIZE), (5, 4), (-1, 3), (0, SIZE)]:
        with pytest.raises(ValueError):
            list(crypto.decrypt_range(sealed[0], FILE_ID, dek, start, end))


def segment_at(index: int) -> int:
    return crypto.HEADER_BYTES + index * (SEGMENT + crypto.TAG)


def flip(blob: Path, offset: int) -> None:
    with blob.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_flipped_byte(sealed: tuple[Path, bytes], ring: KeyRing, plain: tuple[Path, bytes]) -> None:
    blob, dek = sealed[0], ring.unwrap(sealed[1])
    flip(blob, segment_at(2) + 1000)
    # Segments that were not touched still read; the bad one never yields a byte.
    assert b"".join(crypto.decrypt_range(blob, FILE_ID, dek, 0, 99)) == plain[1][:100]
    got: list[bytes] = []
    with pytest.raises(Tampered):
        for chunk in crypto.decrypt_range(blob, FILE_ID, dek, SEGMENT, 2 * SEGMENT + 10):
            got.append(chunk)
    assert got == [plain[1][SEGMENT:2 * SEGMENT]]
    with pytest.raises(Tampered):
        list(crypto.decrypt_all(blob, FILE_ID, dek))


@pytest.mark.parametrize("offset", [0, 4, 5, 12, 16])  # magic, version, nonce, segment, size
def test_edited_header(sealed: tuple[Path, bytes], ring: KeyRing, offset: int) -> None:
    flip(sealed[0], offset)
    with pytest.raises(Tampered):
        list(crypto.decrypt_range(sealed[0], FILE_ID, ring.unwrap(sealed[1]), 0, 10))


def test_dropped_last_segment(sealed: tuple[Path, bytes], ring: KeyRing) -> None:
    blob, dek = sealed[0], ring.unwrap(sealed[1])
    with blob.open("r+b") as f:
        f.truncate(segment_at(3))
    with pytest.raises(Tampered):
        crypto.plaintext_size(blob)
    with pytest.raises(Tampered):
        list(crypto.decrypt_range(blob, FILE_ID, dek, 0, 10))
    # Even with the header's size edited to match the shorter blob, the last full segment
    # was not sealed as the last one (and the header is in every AAD).
    raw = bytearray(blob.read_bytes())
    raw[16:24] = (3 * SEGMENT).to_bytes(8, "big")
    blob.write_bytes(bytes(raw))
    assert crypto.plaintext_size(blob) == 3 * SEGMENT
    with pytest.raises(Tampered):
        list(crypto.decrypt_range(blob, FILE_ID, dek, 3 * SEGMENT - 10, 3 * SEGMENT - 1))


def test_swapped_segments(sealed: tuple[Path, bytes], ring: KeyRing) -> None:
    blob, dek = sealed[0], ring.unwrap(sealed[1])
    raw = bytearray(blob.read_bytes())
    first, second = slice(segment_at(0), segment_at(1)), slice(segment_at(1), segment_at(2))
    raw[first], raw[second] = raw[second], raw[first]
    blob.write_bytes(bytes(raw))
    with pytest.raises(Tampered):
        list(crypto.decrypt_range(blob, FILE_ID, dek, 0, 10))
    with pytest.raises(Tampered):
        list(crypto.decrypt_range(blob, FILE_ID, dek, SEGMENT, SEGMENT + 10))


def test_blob_of_another_file(sealed: tuple[Path, bytes], ring: KeyRing) -> None:
    with pytest.raises(Tampered):
        list(crypto.decrypt_all(sealed[0], "another-file-id-0001", ring.unwrap(sealed[1])))


def test_wrong_keys(sealed: tuple[Path, bytes], ring: KeyRing) -> None:
    with pytest.raises(UnwrapFailed):
        KeyRing(os.urandom(32), "kek-2").unwrap(sealed[1])
    with pytest.raises(UnwrapFailed):
        ring.unwrap(sealed[1][:-1] + bytes([sealed[1][-1] ^ 1]))
    with pytest.raises(Tampered):  # a data key of another file
        list(crypto.decrypt_all(sealed[0], FILE_ID, ring.new_data_key()[0]))
    with pytest.raises(ValueError):
        KeyRing(os.urandom(16), "short")
    assert "kek-1" in repr(ring) and "_kek" not in repr(ring)


def test_empty_file(tmp_path: Path, ring: KeyRing) -> None:
    src, blob = tmp_path / "empty", tmp_path / "blob"
    src.write_bytes(b"")
    dek, _ = ring.new_data_key()
    assert crypto.encrypt_file(src, blob, FILE_ID, dek) == hashlib.sha256(b"").hexdigest()
    assert crypto.plaintext_size(blob) == 0
    assert list(crypto.decrypt_all(blob, FILE_ID, dek)) == []
    with pytest.raises(Tampered):  # even the empty segment is authenticated
        list(crypto.decrypt_all(blob, "another-file-id-0001", dek))


# ---------------------------------------------------------------- storage


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_store_put_path_delete(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    assert mode(store.root) == 0o700 and mode(store.scratch_dir()) == 0o700
    src = store.scratch_dir() / "upload.enc"
    src.write_bytes(b"sealed bytes")
    inode = src.stat().st_ino
    assert not store.exists(FILE_ID)
    await store.put(FILE_ID, src)
    path = store.path(FILE_ID)
    assert path == store.root / "0f" / FILE_ID and store.exists(FILE_ID)
    assert path.read_bytes() == b"sealed bytes" and mode(path.parent) == 0o700
    # A rename, not a copy: a reader never sees a half-written blob.
    assert path.stat().st_ino == inode
    assert not src.exists() and list(store.scratch_dir().iterdir()) == []
    await store.delete(FILE_ID)
    await store.delete(FILE_ID)  # idempotent
    assert not store.exists(FILE_ID) and not path.exists()


async def test_store_put_from_another_filesystem(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to move from")
    with tempfile.NamedTemporaryFile(dir=shm, delete=False) as f:
        f.write(b"sealed elsewhere")
    await store.put(FILE_ID, Path(f.name))
    assert store.path(FILE_ID).read_bytes() == b"sealed elsewhere"
    assert mode(store.path(FILE_ID)) == 0o600
    assert not Path(f.name).exists() and list(store.scratch_dir().iterdir()) == []


async def test_store_refuses_bad_ids_and_failed_puts(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    for bad in ["../../etc/passwd", "ab", ".tmp-00000000", "a/b/c/d/e/f/g", "x" * 200, ""]:
        with pytest.raises(ValueError):
            store.path(bad)
    with pytest.raises(FileNotFoundError):
        await store.put(FILE_ID, store.scratch_dir() / "missing")
    assert not store.exists(FILE_ID)


def test_store_tightens_root_and_purges_scratch(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    root.mkdir(mode=0o755)
    store = LocalBlobStore(root)
    assert mode(root) == 0o700
    old, new = store.scratch_dir() / "old", store.scratch_dir() / "new"
    old.write_bytes(b"plaintext left by a crash")
    new.write_bytes(b"an upload in progress")
    os.utime(old, (1, 1))
    assert store.purge_scratch(3600) == 1
    assert not old.exists() and new.exists()


# ---------------------------------------------------------------- DICOM

IDENTIFYING = {
    "PatientName": "Doe^Jonathan", "PatientID": "MRN-4711-XYZ", "PatientBirthDate": "19610214",
    "PatientSex": "M", "OtherPatientIDs": "ALT-99887", "OtherPatientNames": "Roe^Johnny",
    "PatientAddress": "12 Baker Street", "PatientTelephoneNumbers": "+41225550199",
    "ReferringPhysicianName": "House^Gregory", "InstitutionName": "St Elsewhere Hospital",
    "InstitutionAddress": "1 Hospital Road", "AccessionNumber": "ACC-7731",
    "StudyDate": "20241201", "StudyTime": "101500", "SeriesDate": "20241202",
    "ContentDate": "20241203", "StudyID": "STUDY-778", "OperatorsName": "Ratched^Mildred",
    "PerformingPhysicianName": "Quinn^Michaela", "DeviceSerialNumber": "SN-ABC-123456",
    "StudyDescription": "Chest CT for suspected carcinoma", "PatientAge": "063Y",
}


def identifying_dataset() -> tuple[Dataset, list[str]]:
    ds = dicom_dataset(**IDENTIFYING)
    ds.FrameOfReferenceUID = generate_uid()
    referenced = generate_uid()
    ref = Dataset()
    ref.ReferencedSOPClassUID = SecondaryCaptureImageStorage
    ref.ReferencedSOPInstanceUID = referenced
    ds.ReferencedImageSequence = Sequence([ref])
    ds.SourceImageSequence = Sequence([ref.copy()])  # the same old UID in two places
    observer = Dataset()
    observer.VerifyingObserverName = "Observer^Secret"
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.PersonName = "Person^Secret"
    ds.FlowIdentifier = b"\x01\x02\x03\x04"
    ds.SourceImageSequence[0].PurposeOfReferenceCodeSequence = Sequence()
    ds.AcquisitionDate = "20241204"  # X/Z: kept empty
    request = Dataset()
    request.RequestedProcedureID = "REQ-5521"
    ds.RequestAttributesSequence = Sequence([request])
    ds.private_block(0x0009, "ACME 1.0", create=True).add_new(0x01, "LO", "PRIVATE-SECRET-42")
    ds.add_new(0x60004000, "LT", "Overlay note about Jonathan")
    uids = [ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
            ds.FrameOfReferenceUID, referenced]
    secrets = [*IDENTIFYING.values(), "Observer^Secret", "Person^Secret", "REQ-5521",
               "PRIVATE-SECRET-42", "Overlay note", "ELSEWHERE_CT1", *map(str, uids)]
    return ds, secrets


def test_deidentify(tmp_path: Path) -> None:
    ds, secrets = identifying_dataset()
    src, dst = tmp_path / "in.dcm", tmp_path / "out.dcm"
    src.write_bytes(dicom_bytes(ds))
    assert dicom.is_dicom(src.read_bytes()[:132]) and not dicom.is_dicom(PDF)
    dicom.deidentify(src, dst)
    raw = dst.read_bytes()
    left = [s for s in secrets if s.encode() in raw and s != "M"]
    assert left == []
    out = pydicom.dcmread(dst)
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod == dicom.METHOD
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert out.PatientName == "" and out.PatientID == "" and out.StudyDate == ""  # Z: kept empty
    assert "PatientSex" in out and not out.PatientSex
    for keyword in ["OtherPatientIDs", "PatientAddress", "PatientTelephoneNumbers", "SeriesDate",
                    "RequestAttributesSequence", "PatientAge", "StudyDescription"]:
        assert keyword not in out, keyword  # X: removed
    assert out.PersonName == "ANONYMOUS"  # D
    assert out.FlowIdentifier == b"\0\0\0\0"  # D, for bytes: zeros of the same length
    assert "VerifyingObserverSequence" not in out  # D on a sequence: removed
    for keyword in ["AcquisitionDate", "InstitutionName", "DeviceSerialNumber"]:  # X/Z, X/Z/D
        assert keyword in out and not out[keyword].value, keyword
    assert not any(elem.tag.is_private for elem in out.iterall())
    for keyword in ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                    "FrameOfReferenceUID"]:
        assert out[keyword].value != ds[keyword].value and out[keyword].value.is_valid
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    new_ref = out.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert new_ref == out.SourceImageSequence[0].ReferencedSOPInstanceUID  # consistent
    assert out.SOPClassUID == SecondaryCaptureImageStorage  # a class UID is not identifying
    assert out.ReferencedImageSequence[0].ReferencedSOPClassUID == SecondaryCaptureImageStorage
    assert out.PixelData == ds.PixelData
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600
    assert sniff.detect(raw) == "application/dicom"


def test_deidentify_uids_follow_the_salt(tmp_path: Path) -> None:
    ds, _ = identifying_dataset()
    src = tmp_path / "in.dcm"
    src.write_bytes(dicom_bytes(ds))
    studies = []
    for name, salt in [("a", b"room-salt"), ("b", b"room-salt"), ("c", b"other-salt")]:
        dicom.deidentify(src, tmp_path / name, uid_salt=salt)
        studies.append(pydicom.dcmread(tmp_path / name).StudyInstanceUID)
    assert studies[0] == studies[1] != studies[2]


def test_deidentify_refuses(tmp_path: Path) -> None:
    burned = tmp_path / "burned.dcm"
    burned.write_bytes(dicom_bytes(dicom_dataset(PatientName="Doe^J", BurnedInAnnotation="YES")))
    not_dicom = tmp_path / "x.pdf"
    not_dicom.write_bytes(PDF)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(dicom_bytes()[:140])  # preamble, DICM, and then nothing usable
    for src in (burned, not_dicom, cut):
        with pytest.raises(dicom.DeidentifyError):
            dicom.deidentify(src, tmp_path / "out.dcm")
        assert not (tmp_path / "out.dcm").exists()


def test_development_makes_its_master_key_once(tmp_path: Path) -> None:
    settings = Settings(environment="development", file_storage_dir=tmp_path / "files")
    first = master_key(settings)
    assert len(first) == 32 and master_key(settings) == first  # a restart reads it back
    path = tmp_path / "files" / ".master-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    given = Settings(environment="development", file_master_key="ab" * 32,
                     file_storage_dir=tmp_path / "other")
    assert master_key(given) == bytes.fromhex("ab" * 32)

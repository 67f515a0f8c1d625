"""Where audit records go: the graph (queried by auditEvents) and, with AUDIT_LOG_FILE, a
file of JSON lines for a SIEM."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson

from graph_db import audit
from graph_db.audit import AuditRecord
from graph_db.driver import GraphDB, in_background


class GraphSink:
    name = "graph"

    def __init__(self, db: GraphDB) -> None:
        self.db = db

    async def write(self, records: list[AuditRecord]) -> None:
        with in_background():
            await audit.append(self.db, records)


def json_line(record: AuditRecord) -> bytes:
    """One record as a JSON line: the stored fields, and `at` as ISO-8601 UTC for readers
    that do not want epoch milliseconds."""
    row = record.row()
    row["at"] = record.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if record.details is not None:
        row["details"] = orjson.Fragment(record.details)  # an object, not a string
    else:
        del row["details"]
    return orjson.dumps(row) + b"\n"


class JsonLinesSink:
    """Appends to the file, opened for each batch (so logrotate may move it away) with
    O_APPEND, and writes a batch in one write(): lines of several processes do not mix."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def write(self, records: list[AuditRecord]) -> None:
        data = b"".join(json_line(r) for r in records)
        await asyncio.to_thread(self._append, data)

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

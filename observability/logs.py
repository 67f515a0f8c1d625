"""Logging set-up: text as it always was, or (LOG_FORMAT=json) one JSON object per line, for
our loggers and uvicorn's alike.

What a line may carry: request id, user id, operation name and type, duration, outcome and
error codes. Never a token, an Authorization header, variables or message content: the
operation line (observability/operations.py) logs error codes, not error messages (those can
quote input values), and query strings are cut from uvicorn's request lines (a GET carries
its variables there)."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Fields of the operation being served (request id, user id), added to every JSON line logged
# while it runs: an error logged deep inside a resolver says whose request it was.
_bound: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "log_fields", default=None)


def bind(**fields: Any) -> None:
    """Fields for every line this task (and the tasks it starts) logs from now on."""
    _bound.set({**(_bound.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


class JsonFormatter(logging.Formatter):
    """time (UTC, ISO 8601), level, logger, message, the bound and the record's own fields
    (`extra={"fields": {...}}`), and a traceback as one string (one line: JSON escapes it)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update(_bound.get() or {})
        own = getattr(record, "fields", None)
        if isinstance(own, Mapping):
            line.update(own)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class NoQueryStrings(logging.Filter):
    """uvicorn logs request paths with their query string ("GET /graphql?query=…&variables=
    …", a WebSocket URL a client put a token in): the path alone is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.name.startswith("uvicorn"):
            record.args = tuple(_path_only(arg) for arg in record.args)
        return True


def _path_only(value: object) -> object:
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        return value.split("?", 1)[0]
    return value


def configure(level: str, fmt: Literal["text", "json"]) -> None:
    """One handler on the root logger; uvicorn's loggers propagate to it (run uvicorn with
    log_config=None so that it does not install its own)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(NoQueryStrings())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)  # warnings become log lines (JSON too), not bare stderr

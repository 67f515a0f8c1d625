"""One GraphQL operation as operators see it: counted by type and outcome, timed, and logged
in one line at INFO (transport/http.py and transport/ws.py keep a record per operation).

Outcome: `refused` when nothing of it ran (a document over a limit or not valid, the rate
limit, persisted-query refusals, bad variables), `error` when it ran and any error came
back, `ok` otherwise. Subscriptions are finished when they start streaming or fail to: their
duration is the set-up, not their lifetime."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode

from observability import logs
from observability.metrics import DURATION, OPERATIONS, active_users

log = logging.getLogger("collaboration.operations")
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,99}")  # a GraphQL name: safe to log
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
UNEXPECTED = "INTERNAL_SERVER_ERROR"


def request_id_from(incoming: str | None) -> str:
    """The caller's X-Request-Id when it is a plain token, else a fresh one."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex[:16]


@dataclass(slots=True)
class OperationRecord:
    transport: str  # "http" or "ws"
    request_id: str
    user_id: str | None = None
    type: str = "unknown"
    name: str | None = None
    executed: bool = False
    codes: list[str] = field(default_factory=list)
    status: int | None = None  # HTTP
    started: float = field(default_factory=time.perf_counter)
    finished: bool = False

    def bind(self) -> None:
        """Lines logged while the operation runs carry its request and user."""
        logs.bind(request_id=self.request_id, user_id=self.user_id)

    def operation(self, node: OperationDefinitionNode | None, name: str | None) -> None:
        """What the document resolved to; `name` is the client's operationName."""
        if node is not None:
            self.type = node.operation.value
            name = node.name.value if node.name is not None else name
        if name and _NAME.fullmatch(name):
            self.name = name

    def errors(self, errors: Iterable[GraphQLError | Mapping[str, Any]]) -> None:
        """Codes of the errors answered (never their messages: they can quote input)."""
        for error in errors:
            extensions = (error.extensions if isinstance(error, GraphQLError)
                          else error.get("extensions")) or {}
            code = extensions.get("code")
            self.codes.append(code if isinstance(code, str) and _NAME.fullmatch(code)
                              else UNEXPECTED)

    def refused(self, errors: Iterable[GraphQLError | Mapping[str, Any]]) -> None:
        self.executed = False
        self.errors(errors)

    def failed(self) -> None:
        """It ran and broke unexpectedly (no answer of ours says why)."""
        self.executed = True
        if not self.codes:
            self.codes.append(UNEXPECTED)

    @property
    def outcome(self) -> str:
        if not self.executed:
            return "refused"
        return "error" if self.codes else "ok"

    def finish(self) -> None:
        """Counts, times and logs it, once."""
        if self.finished:
            return
        self.finished = True
        seconds = time.perf_counter() - self.started
        outcome = self.outcome
        OPERATIONS.labels(self.type, outcome).inc()
        DURATION.labels(self.type).observe(seconds)
        if log.isEnabledFor(logging.INFO):  # LOG_LEVEL=WARNING: no line, nothing built
            self._log(seconds, outcome)

    def _log(self, seconds: float, outcome: str) -> None:
        fields: dict[str, Any] = {
            "request_id": self.request_id, "user_id": self.user_id, "operation": self.name,
            "type": self.type, "duration_ms": round(seconds * 1000, 2), "outcome": outcome,
            "transport": self.transport}
        if self.codes:
            fields["codes"] = sorted(set(self.codes))
        if self.status is not None:
            fields["status"] = self.status
        log.info("%s %s %s in %.1f ms [%s]", self.type, self.name or "-", outcome,
                 seconds * 1000, _summary(fields), extra={"fields": fields})


def _summary(fields: Mapping[str, Any]) -> str:
    """The fields for the text format (JSON lines carry them as fields)."""
    shown = ("transport", "status", "request_id", "user_id", "codes")
    return ", ".join(f"{key} {','.join(value) if isinstance(value, list) else value}"
                     for key in shown if (value := fields.get(key)) is not None)


class SocketRecord:
    """What operators see of one acknowledged WebSocket: its user among the active users,
    and the records of its operations by id, settled by the frames the handler sends them
    (`sent`): an `error` frame is a refusal, `next` carries errors, `complete` ends it.
    (roomEvents frames go through the fan-out, not here: the handler settles those.)"""

    def __init__(self, request_id: str, user_id: str) -> None:
        self.request_id = request_id
        self.user_id = user_id
        self._open: dict[str, OperationRecord] = {}
        active_users.add(user_id)

    def begin(self, operation_id: str) -> OperationRecord:
        self.finish(operation_id)  # an id is only reused once its operation is over
        record = OperationRecord("ws", self.request_id, self.user_id)
        self._open[operation_id] = record
        return record

    def sent(self, frame: Mapping[str, Any]) -> None:
        record = self._open.get(frame.get("id") or "")
        if record is None:
            return
        kind, payload = frame.get("type"), frame.get("payload")
        if kind == "error":
            record.refused(payload if isinstance(payload, list) else [])
            self.finish(frame["id"])
        elif kind == "next" and isinstance(payload, Mapping):
            record.errors(payload.get("errors") or [])
        elif kind == "complete":
            self.finish(frame["id"])

    def settle(self, operation_id: str, errors: Iterable[GraphQLError] = (), *,
               refused: bool = False) -> None:
        """Finishes an operation the frames do not settle, with these errors."""
        record = self._open.get(operation_id)
        if record is not None:
            (record.refused if refused else record.errors)(errors)
            self.finish(operation_id)

    def finish(self, operation_id: str) -> None:
        record = self._open.pop(operation_id, None)
        if record is not None:
            record.finish()

    def close(self) -> None:
        """The socket is gone: what still runs is finished as it stands."""
        for operation_id in list(self._open):
            self.finish(operation_id)
        active_users.remove(self.user_id)

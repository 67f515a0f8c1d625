"""A failed send closes a socket's outbox; a peer that went away is normal (no error logged),
anything else is a bug and is logged with its stack trace."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from realtime.subscriber import Outbox


def failing(exc: Exception) -> Any:
    async def send(message: dict[str, Any]) -> None:
        raise exc

    return send


@pytest.mark.parametrize(("exc", "logged"), [
    (ConnectionResetError("peer reset"), False),
    (OSError("client disconnected"), False),  # uvicorn's ClientDisconnected is an OSError
    (RuntimeError("Unexpected ASGI message"), True),
    (TypeError("bad frame"), True),
])
@pytest.mark.parametrize("writable", [True, False])  # sent at once, or by the drain task
async def test_failed_sends(caplog: pytest.LogCaptureFixture, exc: Exception, logged: bool,
                            writable: bool) -> None:
    outbox = Outbox(failing(exc), lambda: writable)
    with caplog.at_level(logging.ERROR, logger="realtime.subscriber"):
        await outbox.push('{"type":"next"}')
        await outbox.flushed(1.0)
    assert outbox.closed
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert bool(errors) is logged, errors
    if logged:
        assert errors[0].exc_info is not None and errors[0].exc_info[1] is exc

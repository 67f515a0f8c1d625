"""A real SMTP server in the test process: aiosmtpd's `Controller` on a free port of
127.0.0.1, keeping every message it accepts (parsed, and as the raw bytes that came over the
wire). `stop()` and `start()` simulate an outage; `data_reply` / `rcpt_reply` make it answer
DATA or RCPT with a refusal ("550 ...", "451 ...").

The Controller runs its own event loop in its own thread, so it never competes with the
test's loop (a send awaited in the test is answered from that thread), and what its handler
collects crosses threads under a lock."""

from __future__ import annotations

import email.policy
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller

_PARSER = BytesParser(policy=email.policy.default)  # gives EmailMessage objects


@dataclass(frozen=True)
class Received:
    message: EmailMessage
    raw: bytes  # as sent: header folding and encodings are visible only here
    mail_from: str
    rcpt_tos: list[str]
    tls: bool  # whether the session had switched to TLS (STARTTLS) before DATA


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.sink.rcpt_reply is not None:
            return self.sink.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.data_reply is not None:
            return self.sink.data_reply
        raw = bytes(envelope.original_content)
        parsed = _PARSER.parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        got = Received(parsed, raw, envelope.mail_from, list(envelope.rcpt_tos),
                       session.ssl is not None)
        with self.sink.lock:
            self.sink.received.append(got)
        return "250 OK"


class SmtpSink:
    """Keeps its port across stop()/start(), as a relay that comes back would. A Controller
    closes its loop when stopped, so each start() builds a new one."""

    def __init__(self, tls_context: ssl.SSLContext | None = None,
                 smtputf8: bool = False) -> None:
        self.host = "127.0.0.1"
        self.smtputf8 = smtputf8  # aiosmtpd's default: not offered
        self.port = free_port()
        self.tls_context = tls_context
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.data_reply: str | None = None
        self.rcpt_reply: str | None = None
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        with self.lock:
            return [r.message for r in self.received]

    def start(self) -> SmtpSink:
        assert self._controller is None, "already running"
        # STARTTLS is offered when there is a context, never required: the tests decide.
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, server_hostname="sink.test",
            tls_context=self.tls_context, require_starttls=False, ready_timeout=5.0,
            enable_SMTPUTF8=self.smtputf8)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Named apart from its function so that a test module can import it (to have it found) and
# still take `smtp_server` as a parameter without shadowing the import.
@pytest.fixture(name="smtp_server")
def smtp_server_fixture() -> Iterator[SmtpSink]:
    """Function-scoped: it starts in milliseconds, and tests stop it or make it refuse."""
    with SmtpSink() as sink:
        yield sink

"""Digest emails (issue 11, point 6) composed by notify/digest.py and sent by SmtpMailer to
a real SMTP server in the test process (tests/smtp.py): MIME structure, headers, no content
beyond counts and one link, escaping, a stable Message-ID, and how failures are told."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiosmtplib
import pytest

from notify import digest as digest_module
from notify.digest import LABELS, Digest, compose, headline, message_id
from notify.mailer import MailerUnavailable, MailRefused, SmtpMailer
from tests.certs import make_certs
from tests.smtp import SmtpSink

SENDER = "Collab <noreply@collab.example.org>"
LINK = "https://collab.example.org/notifications"
# Long enough that a 78-column fold would have to break it.
UNSUBSCRIBE = "https://collab.example.org/notifications/unsubscribe?token=" + "Zq3-x" * 30
TEMPLATES = Path(digest_module.__file__).parent / "templates"


def a_digest(**changes: object) -> Digest:
    values: dict[str, object] = {
        "to_address": "dr.house@hospital.example", "display_name": "Jane SENTINEL-Doe",
        "counts": {"JOIN_REQUEST": 1, "REPLY": 2}, "link": LINK,
        "unsubscribe_url": UNSUBSCRIBE, "message_id_domain": "collab.example.org",
        "digest_id": "user-7f3a|2026-12-07T06:00Z", **changes}
    return Digest(**values)  # type: ignore[arg-type]


def mailer_for(sink: SmtpSink, **options: object) -> SmtpMailer:
    return SmtpMailer(sink.host, sink.port, **options)  # type: ignore[arg-type]


def bodies(message: object) -> tuple[str, str]:
    text, html = (part.get_content() for part in message.iter_parts())  # type: ignore[attr-defined]
    return text, html


async def test_a_digest_arrives_as_text_and_html_with_its_headers(smtp_server: SmtpSink) -> None:
    digest = a_digest()
    await mailer_for(smtp_server).send(compose(digest, SENDER))

    [got] = smtp_server.received
    message = got.message
    assert (got.mail_from, got.rcpt_tos) == ("noreply@collab.example.org", [digest.to_address])
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert message["Subject"] == "You have 3 new notifications in Collab"
    assert message["From"] == SENDER
    assert message["To"] == digest.to_address  # the bare address, no name
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"] == message_id(digest)
    sent_at = parsedate_to_datetime(message["Date"])
    assert abs(sent_at - datetime.now(UTC)) < timedelta(minutes=1)
    # The parser would decode RFC 2047 encoded-words and hide them: on the wire the URL
    # must be written as is, on one line, for mail clients to offer the button.
    assert f"\r\nList-Unsubscribe: <{UNSUBSCRIBE}>\r\n".encode() in got.raw
    assert b"=?" not in got.raw
    assert not got.tls


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+", text))


async def test_the_email_says_counts_and_the_link_and_nothing_else(
        smtp_server: SmtpSink) -> None:
    # The type itself is the guard: a field that could carry content (a room name, a
    # sender, a preview) has to be added here, on purpose, to get past this line.
    assert [f.name for f in dataclasses.fields(Digest)] == [
        "to_address", "display_name", "counts", "link", "unsubscribe_url",
        "message_id_domain", "digest_id"]
    digest = a_digest()
    await mailer_for(smtp_server).send(compose(digest, SENDER))
    [got] = smtp_server.received
    text, html = bodies(got.message)

    for body in (text, html):
        assert "1 join request" in body
        assert "2 replies" in body
        assert "Hello," in body
        assert body.count(LINK) == (1 if body is text else 2)  # html: href and shown
    sources = "".join(p.read_text() for p in sorted(TEMPLATES.iterdir()))
    # The fixed wording in code: the kinds' labels and the headline (which carries the total).
    fixed = " ".join(" ".join(pair) for pair in LABELS.values()) + " " + headline(digest)
    for body in (text, html, got.message["Subject"]):
        without_link = body.replace(LINK, " ")
        assert _words(without_link) <= _words(sources + fixed), body
        assert _numbers(without_link) <= _numbers(sources) | {"1", "2", "3"}, body
    # Neither the recipient's name nor the raw digest id (a user id) appears anywhere.
    assert b"SENTINEL" not in got.raw
    assert b"user-7f3a" not in got.raw


def test_the_html_part_escapes_and_the_text_part_does_not() -> None:
    link = LINK + '?next="><script>alert(1)</script>'
    text, html = bodies(compose(a_digest(link=link), SENDER))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "&#34;&gt;" in html  # the quote cannot close the href attribute
    assert link in text  # plain text has nothing to escape


def test_the_message_id_depends_on_the_digest_id_only() -> None:
    now = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    first = compose(a_digest(), SENDER, now=now)
    retry = compose(a_digest(counts={"MENTION": 1}), SENDER, now=now + timedelta(minutes=5))
    other = compose(a_digest(digest_id="user-7f3a|2026-12-07T06:15Z"), SENDER, now=now)
    assert first["Message-ID"] == retry["Message-ID"]
    assert other["Message-ID"] != first["Message-ID"]
    assert first["Message-ID"].endswith("@collab.example.org>")
    assert first["Date"] == "Mon, 07 Dec 2026 06:00:00 +0000"
    assert retry["Subject"] == "You have 1 new notification in Collab"


@pytest.mark.parametrize("changes", [
    {"counts": {"JOIN_REQUEST": 1, "ROOM_NAME": 1}},
    {"counts": {"REPLY": -1}},
    {"link": "javascript:alert(1)"},
    {"link": LINK + "\r\nBcc: someone@example.org"},
    {"unsubscribe_url": UNSUBSCRIBE + ">, <mailto:x@example.org"},
    {"message_id_domain": "collab.example.org>"},
    {"digest_id": ""},
])
def test_a_digest_refuses_what_it_must_not_carry(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        a_digest(**changes)


def test_an_empty_digest_or_a_naive_date_is_not_composed() -> None:
    with pytest.raises(ValueError, match="nothing"):
        compose(a_digest(counts={"REPLY": 0}), SENDER)
    with pytest.raises(ValueError, match="aware"):
        compose(a_digest(), SENDER, now=datetime(2026, 12, 7, 6, 0))


async def test_an_outage_is_unavailable_at_once_and_the_retry_is_the_same_message(
        smtp_server: SmtpSink) -> None:
    message = compose(a_digest(), SENDER)
    mailer = mailer_for(smtp_server)
    smtp_server.stop()
    started = time.monotonic()
    with pytest.raises(MailerUnavailable):
        await mailer.send(message)
    assert time.monotonic() - started < 1.0
    smtp_server.start()
    await mailer.send(compose(a_digest(), SENDER))  # the outbox composes it again
    [got] = smtp_server.received
    assert got.message["Message-ID"] == message["Message-ID"]


async def test_a_server_that_never_answers_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never greets; returns when the client leaves
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        started = time.monotonic()
        with pytest.raises(MailerUnavailable):
            await SmtpMailer("127.0.0.1", port, timeout=0.3).send(compose(a_digest(), SENDER))
        assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(("stage", "reply", "outcome"), [
    ("data", "550 5.7.1 Message refused by policy", MailRefused),
    ("data", "451 4.3.0 Try again later", MailerUnavailable),
    ("rcpt", "550 5.1.1 No such user", MailRefused),
    ("rcpt", "452 4.2.2 Mailbox full", MailerUnavailable),
])
async def test_refusals_are_told_apart(smtp_server: SmtpSink, stage: str, reply: str,
                                       outcome: type[Exception]) -> None:
    setattr(smtp_server, f"{stage}_reply", reply)
    with pytest.raises(outcome) as caught:
        await mailer_for(smtp_server).send(compose(a_digest(), SENDER))
    if isinstance(caught.value, MailRefused):
        assert caught.value.code == 550
    assert smtp_server.received == []


async def test_starttls_is_not_requested_by_default(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    with SmtpSink(tls_context=context) as sink:
        probe = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, start_tls=False)
        async with probe:
            await probe.ehlo()
            assert probe.supports_extension("starttls")  # offered, so skipping it is ours
        await mailer_for(sink).send(compose(a_digest(), SENDER))
        [got] = sink.received
        assert not got.tls


async def test_starttls_when_asked_never_falls_back_to_plain_text(
        smtp_server: SmtpSink) -> None:
    with pytest.raises(MailerUnavailable, match="STARTTLS"):
        await mailer_for(smtp_server, starttls=True).send(compose(a_digest(), SENDER))
    assert smtp_server.received == []



async def test_an_international_address_goes_over_smtputf8_or_is_refused(
        smtp_server: SmtpSink) -> None:
    digest = a_digest(to_address="dr.müller@klinik.example")
    with pytest.raises(MailRefused, match="SMTPUTF8"):  # this relay cannot take it, ever
        await mailer_for(smtp_server).send(compose(digest, SENDER))
    with SmtpSink(smtputf8=True) as sink:
        await mailer_for(sink).send(compose(digest, SENDER))
        [got] = sink.received
    assert got.rcpt_tos == ["dr.müller@klinik.example"]
    assert "To: dr.müller@klinik.example\r\n".encode() in got.raw

"""Sending email: the `Mailer` protocol the digest outbox talks to, and `SmtpMailer`, its SMTP
implementation over aiosmtplib.

The outbox needs one decision from a failed send: try again later, or give up on this
message. `MailerUnavailable` means the former, `MailRefused` the latter."""

from __future__ import annotations

import copy
import email.policy
from email.message import EmailMessage
from email.policy import EmailPolicy
from typing import Protocol

import aiosmtplib
from aiosmtplib.email import extract_recipients, extract_sender


class MailerUnavailable(Exception):
    """Not sent this time, and nothing about the message itself is to blame: connection
    refused or lost, a timeout, a TLS or login failure, a 4xx (temporary) reply. The
    caller's outbox keeps the message and retries. (A timeout waiting for the reply to DATA
    may hide a delivery: the retry then carries the same Message-ID, which is the most SMTP
    allows for spotting the duplicate.)"""


class MailRefused(Exception):
    """The server refused this message for good (a 5xx reply to MAIL, RCPT or DATA), so a
    retry would get the same answer: the caller gives up on it and logs."""

    def __init__(self, code: int, reply: str) -> None:
        super().__init__(f"{code} {reply}")
        self.code = code
        self.reply = reply


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand `message` to the mail system; raises MailerUnavailable or MailRefused."""
        ...


# The replies that judge the message (its sender, a recipient, its content). A 5xx anywhere
# else (greeting, EHLO, AUTH, STARTTLS) is about our configuration or the server: giving up
# on the message would lose it while that gets fixed, so those count as unavailable.
_ABOUT_THE_MESSAGE = (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPRecipientRefused,
                      aiosmtplib.SMTPDataError)


def wire_bytes(message: EmailMessage, *, utf8: bool = False) -> bytes:
    """`message` as sent: CRLF line ends, Bcc dropped, headers folded by the message's own
    policy (`utf8`: raw UTF-8 headers, for an SMTPUTF8 session).

    aiosmtplib would re-fold every header with `email.policy.SMTP` (78 columns), which turns
    a header too long for one line and without spaces (a List-Unsubscribe URL with its
    token) into RFC 2047 encoded-words: mail clients then see no URL at all. Python's own
    parser decodes them again, so only the raw bytes show it."""
    outgoing = copy.copy(message)
    del outgoing["Bcc"]
    # A compat32 message (no EmailPolicy) gets the standard SMTP policy instead.
    policy = message.policy if isinstance(message.policy, EmailPolicy) else email.policy.SMTP
    return outgoing.as_bytes(policy=policy.clone(linesep="\r\n", utf8=utf8))


def _classify(error: aiosmtplib.SMTPResponseException) -> Exception:
    if isinstance(error, _ABOUT_THE_MESSAGE) and 500 <= error.code < 600:
        return MailRefused(error.code, error.message)
    return MailerUnavailable(f"{error.code} {error.message}")


def _classify_all(error: aiosmtplib.SMTPRecipientsRefused) -> Exception:
    # Every recipient was refused (aiosmtplib raises this only then): permanent only if
    # every refusal was; one 4xx among them is worth another try.
    if error.recipients and all(500 <= r.code < 600 for r in error.recipients):
        first = error.recipients[0]
        return MailRefused(first.code, first.message)
    return MailerUnavailable(str(error))


class SmtpMailer:
    """One SMTP connection per message.

    Digests go out at most once per user per 15 minutes, so connection set-up (about 20 ms
    to a local relay, measured) is noise. A kept-open connection would need idle keepalives
    (relays drop idle clients after a few minutes), a reconnect on every stale socket, and a
    lock or pool for concurrent sends: more ways to fail for nothing measurable.

    `timeout` bounds each step (connect, each command and its reply), as aiosmtplib does, so
    a dead relay costs at most a few timeouts, never a hang. `starttls=False` means plain
    text all the way: an explicit False, because aiosmtplib's default (None) upgrades
    whenever the server offers it. `starttls=True` refuses to continue in plain text when the
    server does not offer it, and verifies the server's certificate."""

    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None, starttls: bool = False,
                 timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self._username = username
        self._password = password
        self.starttls = starttls
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        sender = extract_sender(message)
        recipients = extract_recipients(message)
        if sender is None or not recipients:
            raise ValueError("the message needs a From (or Sender) and a recipient")
        # An address that is not ASCII can only travel in an SMTPUTF8 session: written
        # into an ASCII header it would come out as a mangled encoded-word.
        utf8 = not all(address.isascii() for address in (sender, *recipients))
        try:
            errors, _ = await aiosmtplib.send(
                wire_bytes(message, utf8=utf8), sender=sender, recipients=recipients,
                mail_options=["SMTPUTF8"] if utf8 else None, hostname=self.host,
                port=self.port, username=self._username, password=self._password,
                start_tls=self.starttls, timeout=self.timeout)
        except aiosmtplib.SMTPRecipientsRefused as error:
            raise _classify_all(error) from error
        except aiosmtplib.SMTPResponseException as error:
            raise _classify(error) from error
        except aiosmtplib.SMTPNotSupported as error:
            if utf8 and "SMTPUTF8" in str(error):
                # This relay will never take this address: retrying cannot help.
                raise MailRefused(553, str(error)) from error
            raise MailerUnavailable(str(error)) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            # Connection refused/lost, timeouts (both subclasses of OSError too), TLS
            # failures, a server without STARTTLS or AUTH when we need them.
            raise MailerUnavailable(f"{type(error).__name__}: {error}") from error
        if errors:
            # Some recipients took it and some did not: a retry would send it twice to
            # those who have it, so the refused ones are given up on.
            code, reply = next(iter(errors.values()))
            raise MailRefused(code, f"refused for {', '.join(errors)}: {reply}")

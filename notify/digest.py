"""The email digest: "You have 3 new notifications in Collab", counts by kind and one link.

No PHI goes into it. Room names often encode a patient or a condition, message text and
file names are clinical content, and an email is read wherever it lands: shared inboxes,
phone lock screens, relays' logs. So the email carries counts in fixed wording and one link
that grants nothing without signing in, and `Digest` has no field that could hold anything
else: what is not there cannot leak through a template change."""

from __future__ import annotations

import email.policy
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

PRODUCT = "Collab"

# Fixed wording per notification kind: (one, many). Also the list of kinds a digest counts.
LABELS: dict[str, tuple[str, str]] = {
    "JOIN_REQUEST": ("join request", "join requests"),
    "JOIN_DECISION": ("answer to a join request", "answers to join requests"),
    "INVITATION": ("invitation to a room", "invitations to rooms"),
    "MENTION": ("mention", "mentions"),
    "REPLY": ("reply", "replies"),
    "ROOM_UPDATED": ("room update", "room updates"),
    "ASSISTANT": ("answer from the assistant", "answers from the assistant"),
    "FILE_SCANNED": ("file check result", "file check results"),
}

# RFC 5322 allows 998 characters a line. The policy's usual 78 would make the email package
# fold a long List-Unsubscribe URL into RFC 2047 encoded-words, which clients do not read as
# a URL; with room for the whole URL on one line it stays as written.
POLICY = email.policy.SMTP.clone(max_line_length=998)
_MAX_URL = 900
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    # On for .html (jinja2's own default is off everywhere); the .txt part stays plain text.
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _check_url(name: str, url: str) -> None:
    # Only web links: a javascript: or data: URL in an email is an attack, not a link.
    # No whitespace, control characters or angle brackets either: the URL goes into a
    # header (List-Unsubscribe wraps it in <>) and must be one unambiguous token.
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(f"{name} must be an http(s) URL")
    if len(url) > _MAX_URL or any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"{name} must be one printable token of at most {_MAX_URL} chars")


@dataclass(frozen=True, slots=True)
class Digest:
    """What one digest email may say. `display_name` is the recipient's own name, kept for
    the caller's records: `compose` never puts it in the email (see `_render`)."""

    to_address: str
    display_name: str
    counts: dict[str, int]  # kind name (LABELS' keys) -> unread items of that kind
    link: str  # PUBLIC_BASE_URL + "/notifications": needs a login to show anything
    unsubscribe_url: str  # one-click, POST-only, with an opaque token
    message_id_domain: str
    digest_id: str  # the outbox row's key: a retried send is the same message

    def __post_init__(self) -> None:
        unknown = set(self.counts) - set(LABELS)
        if unknown:
            raise ValueError(f"unknown notification kinds: {sorted(unknown)}")
        if any(n < 0 for n in self.counts.values()):
            raise ValueError("counts must not be negative")
        _check_url("link", self.link)
        _check_url("unsubscribe_url", self.unsubscribe_url)
        if "<" in self.unsubscribe_url or ">" in self.unsubscribe_url:
            raise ValueError("unsubscribe_url must not contain angle brackets")
        if not _HOSTNAME.match(self.message_id_domain):
            raise ValueError("message_id_domain must be a host name")
        if not self.digest_id:
            raise ValueError("digest_id must not be empty")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def items(digest: Digest) -> list[str]:
    """"1 join request", "2 replies", ... in LABELS' order, zero counts left out."""
    found = []
    for kind, (one, many) in LABELS.items():
        n = digest.counts.get(kind, 0)
        if n:
            found.append(f"{n} {one if n == 1 else many}")
    return found


def headline(digest: Digest) -> str:
    noun = "notification" if digest.total == 1 else "notifications"
    return f"You have {digest.total} new {noun} in {PRODUCT}"


def message_id(digest: Digest) -> str:
    """Derived from digest_id alone, so every attempt at one digest carries the same
    Message-ID (receivers can spot a duplicate). Hashed: the id may name a user or a time
    window, which is nobody's business in a header that every relay logs."""
    token = hashlib.sha256(digest.digest_id.encode()).hexdigest()[:32]
    return f"<digest.{token}@{digest.message_id_domain}>"


def _render(digest: Digest) -> tuple[str, str]:
    # The greeting is "Hello," and never the display name: a user's name can identify a
    # patient (or a patient's clinician) to whoever reads that mailbox, its previews or the
    # relays' logs, and the recipient does not need it to know the email is for them.
    values = {"headline": headline(digest), "items": items(digest), "link": digest.link,
              "product": PRODUCT}
    text = _templates.get_template("digest.txt").render(values)
    html = _templates.get_template("digest.html").render(values)
    return text, html


def compose(digest: Digest, sender: str, *, now: datetime | None = None) -> EmailMessage:
    """The digest email (multipart/alternative: text/plain, then text/html) from `sender`
    (EMAIL_FROM) to the digest's address only. `now` is the Date (aware; default: now)."""
    if digest.total == 0:
        raise ValueError("a digest with nothing to report is not sent")
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    text, html = _render(digest)
    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    message["To"] = digest.to_address  # the bare address: no display name (see _render)
    message["Subject"] = headline(digest)
    message["Date"] = format_datetime(when.astimezone(UTC))
    message["Message-ID"] = message_id(digest)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
    # RFC 2369 + RFC 8058: mail clients show an unsubscribe button that POSTs
    # "List-Unsubscribe=One-Click" to the URL. The endpoint acts on POST only, because
    # mail scanners follow GET links (GitLab's users were unsubscribed that way).
    message["List-Unsubscribe"] = f"<{digest.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text, charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    return message

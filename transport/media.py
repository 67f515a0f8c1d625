"""`Accept` negotiation for /graphql (RFC 9110 §12.5.1, GraphQL over HTTP §Accept).

Each offered type gets the quality of the most specific range that matches it; the highest
quality wins, then the more specific match. Ties between ranges the client named exactly go
to the order offered (application/graphql-response+json first, as the spec recommends); ties
between wildcard matches go to application/json, which is what `*/*` and legacy clients get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
HTML = "text/html"
# No Accept header at all: a legacy client (the spec's "as if application/json").
DEFAULT = JSON

_EXACT, _SUBTYPE_WILDCARD, _ANY = 3, 2, 1


@dataclass(frozen=True, slots=True)
class _Range:
    kind: str
    subtype: str
    q: float

    def specificity(self, media: str) -> int:
        """How precisely this range names `media` (0: it does not)."""
        kind, _, subtype = media.partition("/")
        if self.kind == "*" and self.subtype == "*":
            return _ANY
        if self.kind != kind:
            return 0
        if self.subtype == "*":
            return _SUBTYPE_WILDCARD
        return _EXACT if self.subtype == subtype else 0


def parse_accept(header: str) -> list[_Range]:
    """The ranges of an Accept header; malformed entries are left out."""
    ranges: list[_Range] = []
    for part in header.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        kind, slash, subtype = media.lower().partition("/")
        if not slash or not kind or not subtype or (kind == "*" and subtype != "*"):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            ranges.append(_Range(kind, subtype, q))
    return ranges


def negotiate(header: str | None, offered: Sequence[str]) -> str | None:
    """The offered type to answer with, or None when the client accepts none of them."""
    if header is None or not header.strip():
        return DEFAULT if DEFAULT in offered else offered[0]
    ranges = parse_accept(header)
    best: tuple[float, int, int] | None = None
    chosen: str | None = None
    for rank, media in enumerate(offered):
        matches = [(r.specificity(media), r.q) for r in ranges if r.specificity(media)]
        if not matches:
            continue
        specificity, q = max(matches)  # the most specific range decides the quality
        if q <= 0:
            continue
        order = rank if specificity == _EXACT else _wildcard_order(media, offered)
        key = (q, specificity, -order)
        if best is None or key > best:
            best, chosen = key, media
    return chosen


def _wildcard_order(media: str, offered: Sequence[str]) -> int:
    return -1 if media == JSON else offered.index(media)

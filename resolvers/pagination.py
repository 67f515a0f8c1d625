"""Opaque Relay cursors bound to the query (and filter) that produced them."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from resolvers.errors import BadInput

MAX_PAGE = 100
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool
    has_previous: bool


def forward(found: list[T], limit: int, after: str | None,
            cursor: Callable[[T], str]) -> Page[T]:
    """A first/after page from up to `limit + 1` rows (the extra one says there is more)."""
    items = found[:limit]
    return Page(items, [cursor(item) for item in items], has_next=len(found) > limit,
                has_previous=after is not None)


def page_size(value: int | None, field: str = "first", default: int = 20) -> int:
    size = default if value is None else value
    if not 1 <= size <= MAX_PAGE:
        raise BadInput(field, f"must be between 1 and {MAX_PAGE}")
    return size


def fingerprint(*parts: Any) -> str:
    return hashlib.blake2s(orjson.dumps(parts, default=str), digest_size=6).hexdigest()


def encode(kind: str, fp: str, *keys: Any) -> str:
    raw = orjson.dumps([kind, fp, *keys])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(kind: str, fp: str, cursor: str | None, field: str = "after") -> list[Any] | None:
    """Keys of a cursor made by the same kind of query with the same filter, or BadInput."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise BadInput(field, "malformed cursor") from None
    if not isinstance(data, list) or len(data) < 3 or data[0] != kind or data[1] != fp:
        raise BadInput(field, "cursor does not belong to this query")
    return data[2:]

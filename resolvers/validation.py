"""Input checks that name the offending field (BAD_USER_INPUT)."""

from __future__ import annotations

from resolvers.errors import BadInput


def text(field: str, value: str, *, min_len: int = 1, max_len: int) -> str:
    cleaned = value.strip()
    if not min_len <= len(cleaned) <= max_len:
        raise BadInput(field, f"must be {min_len} to {max_len} characters")
    return cleaned


def optional_text(field: str, value: str | None, *, max_len: int) -> str | None:
    if value is None:
        return None
    cleaned = value.strip()
    if len(cleaned) > max_len:
        raise BadInput(field, f"must be at most {max_len} characters")
    return cleaned or None


def int_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise BadInput(field, f"must be between {low} and {high}")
    return value


def id_list(field: str, values: list[str], *, max_items: int) -> list[str]:
    unique = list(dict.fromkeys(values))
    if len(unique) > max_items:
        raise BadInput(field, f"at most {max_items} ids")
    if any(not 0 < len(v) <= 128 for v in unique):
        raise BadInput(field, "invalid id")
    return unique

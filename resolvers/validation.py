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


def representation(index: int, value: object, entities: frozenset[str]) -> None:
    """An `_entities` representation as gateways send them: {"__typename": <an entity>,
    "id": <string>} (the only key of both entities); BadInput naming its position else."""
    field = f"representations[{index}]"
    if not isinstance(value, dict) or set(value) != {"__typename", "id"}:
        raise BadInput(field, "must be an object of __typename and id")
    if value["__typename"] not in entities:
        raise BadInput(field, f"__typename must be one of {', '.join(sorted(entities))}")
    if not isinstance(value["id"], str):
        raise BadInput(field, "id must be a string")

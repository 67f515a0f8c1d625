"""Matching a batch's rows back to the keys asked for.

`UNWIND $keys` does not promise to return rows in the order of the keys (a planner may reorder
them; aggregation regroups them), so every batched read returns its key with each row and is
matched on it, never by position: one user's standing attributed to another would be an
authorization bug."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Row = dict[str, Any]


def row_key(value: Any) -> Any:
    """A key as it comes back from Cypher: lists (composite keys) become tuples."""
    return tuple(value) if isinstance(value, list) else value


def by_key(keys: Sequence[K], rows: Iterable[Row], value: Callable[[Row], V], missing: V,
           *, field: str = "key") -> list[V]:
    """One value per key, in the order of `keys` (duplicates included): the row whose
    `field` equals the key, else `missing`."""
    found = {row_key(row[field]): value(row) for row in rows}
    return [found.get(key, missing) for key in keys]


def unique(keys: Sequence[K]) -> list[K]:
    """Each key once, in first-seen order: a duplicate key would be unwound twice, and an
    aggregation grouped by key would then collect its rows twice."""
    return list(dict.fromkeys(keys))


def params_of(keys: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Composite keys as Cypher lists, each once."""
    return [list(k) for k in unique(keys)]

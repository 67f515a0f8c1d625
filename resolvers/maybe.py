"""Values that are ready now or later: fields read from a page resolve without a coroutine.

A page brings what its list shows (graph_db/pages.py) and primes the operation's loaders.
As `async def` resolvers, each of a 50-message page's fields still cost a coroutine, a
DataLoader future, and a task when graphql-core gathers the list (~12 ms of a message page's
16 ms of CPU). A field whose value is in its loader returns it as is; graphql-core only
awaits what is awaitable, so a page of primed fields completes without one await.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import TypeAlias, TypeVar

from strawberry.dataloader import DataLoader

K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")

MaybeAwaitable: TypeAlias = T | Awaitable[T]


class _Missing:
    __slots__ = ()


MISSING = _Missing()


def peek(loader: DataLoader[K, T], key: K) -> T | _Missing:
    """The loader's value for `key` when it is already there (primed or loaded), else MISSING."""
    if not loader.cache:
        return MISSING
    future = loader.cache_map.get(key)
    if future is None or not future.done() or future.cancelled() \
            or future.exception() is not None:
        return MISSING
    value: T = future.result()
    return value


def load(loader: DataLoader[K, T], key: K) -> MaybeAwaitable[T]:
    """`loader.load(key)`, without the future when the value is there."""
    found = peek(loader, key)
    return loader.load(key) if isinstance(found, _Missing) else found


def then(value: MaybeAwaitable[T], convert: Callable[[T], R]) -> MaybeAwaitable[R]:
    """`convert(value)`, now when `value` is ready, after awaiting it otherwise."""
    if isawaitable(value):
        return _later(value, convert)
    return convert(value)


async def _later(value: Awaitable[T], convert: Callable[[T], R]) -> R:
    return convert(await value)



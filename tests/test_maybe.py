"""Fields read from a page resolve now (resolvers/maybe.py); others still through their loader."""

from __future__ import annotations

import asyncio
from inspect import isawaitable

import pytest
from strawberry.dataloader import DataLoader

from resolvers import maybe


def _loader(calls: list[list[str]]) -> DataLoader[str, int]:
    async def fetch(keys: list[str]) -> list[int]:
        calls.append(list(keys))
        return [len(k) for k in keys]

    return DataLoader(load_fn=fetch)


def test_a_primed_value_is_returned_as_is_without_a_load() -> None:
    async def run() -> None:
        calls: list[list[str]] = []
        loader = _loader(calls)
        loader.prime("abc", 7)
        assert maybe.peek(loader, "abc") == 7
        assert maybe.load(loader, "abc") == 7
        assert maybe.then(maybe.load(loader, "abc"), lambda n: n * 2) == 14
        assert calls == []

    asyncio.run(run())


def test_a_missing_value_is_loaded_and_converted_later() -> None:
    async def run() -> None:
        calls: list[list[str]] = []
        loader = _loader(calls)
        assert maybe.peek(loader, "abcd") is maybe.MISSING
        pending = maybe.then(maybe.load(loader, "abcd"), lambda n: n * 2)
        assert isawaitable(pending)
        assert await pending == 8
        assert calls == [["abcd"]]
        # Loaded once: now it is there.
        assert maybe.load(loader, "abcd") == 4

    asyncio.run(run())


def test_a_pending_or_failed_load_is_not_taken_as_a_value() -> None:
    async def run() -> None:
        async def failing(keys: list[str]) -> list[int]:
            raise RuntimeError("database down")

        loader: DataLoader[str, int] = DataLoader(load_fn=failing)
        first = loader.load("x")
        assert maybe.peek(loader, "x") is maybe.MISSING  # under way
        with pytest.raises(RuntimeError):
            await first
        assert maybe.peek(loader, "x") is maybe.MISSING  # failed: loading again raises
        uncached: DataLoader[str, int] = DataLoader(load_fn=failing, cache=False)
        assert maybe.peek(uncached, "x") is maybe.MISSING

    asyncio.run(run())

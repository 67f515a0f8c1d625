"""Reads of concurrent operations coalesced into one statement (graph_db/coalesce.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from graph_db.coalesce import Coalescer


class Store:
    """A stand-in database: values by key, each statement recorded and held until released."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.statements: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False

    async def fetch(self, _db: Any, keys: list[str]) -> list[int | None]:
        self.statements.append(keys)
        snapshot = dict(self.values)  # what the statement reads is what was there when sent
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("database unreachable")
        return [snapshot.get(k) for k in keys]


async def test_reads_asked_for_while_statements_run_go_together_in_the_next() -> None:
    store = Store()
    store.values = {f"k{i}": i for i in range(40)}
    reads = Coalescer(None, store.fetch, max_in_flight=1)
    store.gate.clear()
    first = asyncio.ensure_future(reads.load_many(["k0"]))
    await asyncio.sleep(0.01)  # sent, held
    rest = [asyncio.ensure_future(reads.load_many([f"k{i}", f"k{i + 1}"]))
            for i in range(1, 39, 2)]
    await asyncio.sleep(0.01)
    assert store.statements == [["k0"]]
    store.gate.set()
    assert await first == [0]
    assert [await r for r in rest] == [[i, i + 1] for i in range(1, 39, 2)]
    assert len(store.statements) == 2 and sorted(store.statements[1]) == sorted(
        f"k{i}" for i in range(1, 39))
    assert reads.statements == 2


async def test_a_read_never_joins_a_statement_already_sent() -> None:
    store = Store()
    reads = Coalescer(None, store.fetch, max_in_flight=2)
    store.gate.clear()
    before = asyncio.ensure_future(reads.load_many(["room"]))
    await asyncio.sleep(0.01)
    store.values["room"] = 7  # a write finished after the first statement was sent
    after = asyncio.ensure_future(reads.load_many(["room"]))
    await asyncio.sleep(0.01)
    store.gate.set()
    assert await before == [None]
    assert await after == [7]


async def test_a_failed_statement_fails_its_callers_only() -> None:
    store = Store()
    reads = Coalescer(None, store.fetch, max_in_flight=1)
    store.gate.clear()
    store.fail_next = True
    doomed = [asyncio.ensure_future(reads.load_many(["a"])) for _ in range(3)]
    await asyncio.sleep(0.01)
    later = asyncio.ensure_future(reads.load_many(["b"]))
    store.values["b"] = 2
    store.gate.set()
    for d in doomed:
        with pytest.raises(ConnectionError):
            await d
    assert await later == [2]
    assert len(store.statements) == 2


async def test_a_caller_that_goes_away_costs_the_others_nothing() -> None:
    store = Store()
    store.values = {"a": 1, "b": 2}
    reads = Coalescer(None, store.fetch, max_in_flight=1)
    store.gate.clear()
    busy = asyncio.ensure_future(reads.load_many(["a"]))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(reads.load_many(["a"]))
    stays = asyncio.ensure_future(reads.load_many(["b"]))
    await asyncio.sleep(0.01)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    store.gate.set()
    assert await busy == [1]
    assert await stays == [2]
    assert store.statements == [["a"], ["b"]]


async def test_one_callers_keys_are_never_split_and_a_statement_stays_bounded() -> None:
    store = Store()
    reads = Coalescer(None, store.fetch, max_in_flight=1, max_keys=10)
    store.gate.clear()
    first = asyncio.ensure_future(reads.load_many(["x"]))
    await asyncio.sleep(0.01)
    big = asyncio.ensure_future(reads.load_many([f"b{i}" for i in range(25)]))
    small = [asyncio.ensure_future(reads.load_many([f"s{i}"])) for i in range(12)]
    await asyncio.sleep(0.01)
    store.gate.set()
    await asyncio.gather(first, big, *small)
    assert [len(s) for s in store.statements] == [1, 25, 10, 2]

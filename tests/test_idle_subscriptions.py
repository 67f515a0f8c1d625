"""What an idle subscription costs: no task of its own once live (a task replays what it
missed, then ends), one loop timer for every socket's token expiry (transport.deadlines), and
uvicorn's receive queue as an Inbox (transport.uvicorn_adapter) that behaves as asyncio.Queue
does. docs/benchmarks.md: "KB per idle subscription"."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from typing import Any

import pytest
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)

from observability import logs
from realtime.subscriber import Subscriber
from tests.harness import LiveServer
from tests.personas import People, make_room
from tests.rt_helpers import EVENTS, attached, head_seq, send
from tests.wsclient import connect
from transport.deadlines import Deadlines
from transport.uvicorn_adapter import Inbox

# -- the shared timer -------------------------------------------------------------------------


async def test_deadlines_run_in_order_and_cancelled_ones_do_not() -> None:
    deadlines, ran = Deadlines(), []
    now = asyncio.get_running_loop().time()
    deadlines.add(now + 0.15, lambda: ran.append("late"))
    dropped = deadlines.add(now + 0.05, lambda: ran.append("cancelled"))
    deadlines.add(now + 0.10, lambda: ran.append("middle"))
    deadlines.add(now + 0.02, lambda: ran.append("early"))  # arms the timer earlier
    deadlines.cancel(dropped)
    await asyncio.sleep(0.3)
    assert ran == ["early", "middle", "late"]
    assert len(deadlines) == 0


async def test_deadlines_run_outside_any_sockets_context() -> None:
    deadlines, seen = Deadlines(), []
    token = logs._bound.set({"request_id": "the-socket-that-armed-the-timer"})
    try:
        deadlines.add(asyncio.get_running_loop().time() + 0.02,
                      lambda: seen.append(logs._bound.get()))
        await asyncio.sleep(0.1)
    finally:
        logs._bound.reset(token)
    assert seen == [None]


async def test_cancelled_deadlines_do_not_pile_up() -> None:
    deadlines = Deadlines()
    far = asyncio.get_running_loop().time() + 3600
    keys = [deadlines.add(far, lambda: None) for _ in range(10_000)]
    for key in keys[:-1]:
        deadlines.cancel(key)
    assert len(deadlines) == 1
    assert len(deadlines._heap) < 200
    deadlines.cancel(keys[-1])


# -- uvicorn's receive queue ---------------------------------------------------------------------


async def test_inbox_keeps_order_and_wakes_its_reader() -> None:
    inbox = Inbox()
    assert inbox.empty()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert not inbox.empty()
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait(3)
    assert await reader == 3
    assert inbox.empty() and inbox._items is None and inbox._getters is None


async def test_a_cancelled_reader_passes_its_wakeup_on() -> None:
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("only")  # wakes `first`...
    first.cancel()  # ... which is cancelled before it runs: `second` gets the message
    assert await second == "only"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert inbox.empty()


# -- strawberry's receive loop, which transport/ws.py mirrors ----------------------------------

# transport/ws.py TransportWSHandler.handle is strawberry's `handle` reading `iter_json`, in
# one frame. When either changes upstream, compare them with it before updating these.
MIRRORED = {
    "BaseGraphQLTransportWSHandler.handle": (
        BaseGraphQLTransportWSHandler.handle, "38622a72d445f675b7b55290cb8d5f75"),
    "ASGIWebSocketAdapter.iter_json": (
        ASGIWebSocketAdapter.iter_json, "eccc1390e8d7876f24a2c6708eb293b9"),
}


def _digest(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:32]


@pytest.mark.parametrize("name", sorted(MIRRORED))
def test_strawberrys_receive_loop_is_the_one_mirrored(name: str) -> None:
    function, digest = MIRRORED[name]
    assert _digest(function) == digest, (
        f"strawberry's {name} changed: check transport/ws.py TransportWSHandler.handle "
        "still does what it does, then update the digest here")


# -- a live subscription -------------------------------------------------------------------------


def _subscriber(live: LiveServer, room_id: str) -> Subscriber:
    async def find() -> Subscriber:
        stream = live.services.hub.stream_of(room_id)
        assert stream is not None
        (sub,) = [s for group in stream.groups.values() for s in group.values()]
        return sub

    return live.call(find())


def _room_event_tasks(live: LiveServer) -> int:
    async def count() -> int:
        names = {"_room_events", "_catch_up"}
        return sum(1 for task in asyncio.all_tasks()
                   if getattr(task.get_coro(), "__name__", "") in names)

    return live.call(count())


async def test_a_live_subscription_holds_no_task_and_replays_when_behind(
        fresh: LiveServer) -> None:
    people = People(fresh.settings, fresh.url)
    try:
        host = people.make_user("doctor")
        room = (await make_room(host))["id"]
        async with await connect(fresh.ws_url, host.token) as client:
            await client.subscribe("s", EVENTS, {"room": room})
            await attached(fresh, room, 1)
            sent = [(await send(host, room, f"m{n}"))["id"] for n in range(3)]
            first = await client.durable("s", 3)
            assert [e["message"]["id"] for e in first] == sent
            sub = _subscriber(fresh, room)
            assert sub.live and sub.owner is not None
            assert getattr(sub.owner, "task", "missing") is None
            assert _room_event_tasks(fresh) == 0

            # As if it had missed the last two events: a task replays them, then ends.
            head = head_seq(fresh, room)

            def rewind() -> None:
                sub.delivered_seq = head - 2
                sub.fell_behind()

            fresh.call(_in_loop(rewind))
            replayed = await client.durable("s", 2)
            assert [e["message"]["id"] for e in replayed] == sent[1:]
            for _ in range(100):
                if sub.live and _room_event_tasks(fresh) == 0:
                    break
                await asyncio.sleep(0.02)
            assert sub.live and getattr(sub.owner, "task", "missing") is None
            assert _room_event_tasks(fresh) == 0
    finally:
        await people.aclose()


async def _in_loop(function: Any) -> None:
    function()


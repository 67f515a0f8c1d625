"""A reconnect storm: many subscribers resuming from one cursor cost one read and one render
per group (realtime/stream.py), the cursor is checked in the access read, and a removal that
races a subscribe still ends it (transport/ws_room_events.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from realtime import cursor as event_cursor
from resolvers import room_events
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, make_room
from tests.rt_helpers import EVENTS, REMOVE, attached, head_seq, send
from tests.wsclient import connect

RESUMERS = 12


def _queries(live: LiveServer) -> int:
    async def read() -> int:
        return live.services.db.stats.queries

    return live.call(read())


async def test_subscribers_resuming_from_one_cursor_share_one_read_and_render(
        fresh: LiveServer, people: People) -> None:
    host = people.make_user("teacher")
    watcher, *resumers = [people.make_user("student") for _ in range(RESUMERS + 1)]
    await register(host, watcher, *resumers)
    room = await make_room(host, invite=[watcher, *resumers])
    rid = room["id"]
    async with await connect(fresh.ws_url, watcher.token) as live_one:
        await live_one.subscribe("w", EVENTS, {"room": rid})  # keeps the stream in memory
        await attached(fresh, rid, 1)
        after = event_cursor.encode(rid, head_seq(fresh, rid))
        sent = [await send(host, rid, f"while away {n}") for n in range(5)]
        await live_one.durable("w", 5)
        clients = [await connect(fresh.ws_url, r.token) for r in resumers]
        try:
            before = _queries(fresh)
            for client in clients:
                await client.subscribe("s", EVENTS, {"room": rid, "after": after})
            replays = [await c.durable("s", 5) for c in clients]
            statements = _queries(fresh) - before
        finally:
            for client in clients:
                await client.close()
    ids = [m["id"] for m in sent]
    for replay in replays:
        assert [e["message"]["id"] for e in replay] == ids
        assert replay == replays[0]  # the same frames, in order
    # One access read per subscribe (the cursor checked in it), and one render per event for
    # them all (its message and author: 2 statements). Before, each resumer also read the
    # head, its membership again, the events, and rendered each event itself: 13 statements
    # per resumer, 156 here.
    assert statements <= RESUMERS + 2 * len(sent) + 4, statements


@pytest.fixture
def held_authorization(fresh: LiveServer) -> Iterator[tuple[threading.Event, list[str]]]:
    """Holds each subscribe between its access check and its attach until released; counts
    the membership re-reads."""
    release, rereads = threading.Event(), []
    authorize, still = room_events.authorize, room_events.still_participant

    async def held(ctx: Any, room_id: str, after: str | None) -> room_events.StreamStart:
        start = await authorize(ctx, room_id, after)
        while not release.is_set():
            await asyncio.sleep(0.01)
        return start

    async def counted(db: Any, room_id: str, user_id: str) -> bool:
        rereads.append(user_id)
        return await still(db, room_id, user_id)

    room_events.authorize, room_events.still_participant = held, counted  # type: ignore[assignment]
    try:
        yield release, rereads
    finally:
        room_events.authorize, room_events.still_participant = authorize, still  # type: ignore[assignment]


async def test_a_removal_between_the_check_and_the_attach_ends_the_subscription(
        fresh: LiveServer, people: People,
        held_authorization: tuple[threading.Event, list[str]]) -> None:
    release, rereads = held_authorization
    host = people.make_user("doctor")
    watcher, second, member = (people.make_user("doctor"), people.make_user("doctor"),
                               people.make_user("patient"))
    await register(host, watcher, second, member)
    room = await make_room(host, invite=[watcher, second, member])
    rid = room["id"]
    release.set()
    async with await connect(fresh.ws_url, watcher.token) as live_one, \
            await connect(fresh.ws_url, second.token) as live_two:
        await live_one.subscribe("w", EVENTS, {"room": rid})
        await attached(fresh, rid, 1)
        assert rereads == [watcher.id]  # no stream in this process before its check
        await live_two.subscribe("w", EVENTS, {"room": rid})
        await attached(fresh, rid, 2)
        assert rereads == [watcher.id]  # the stream processed nothing since: no re-read
        release.clear()
        async with await connect(fresh.ws_url, member.token) as removed:
            await removed.subscribe("s", EVENTS, {"room": rid})
            await asyncio.sleep(0.3)  # checked, held before the attach
            await host.gql(REMOVE, room=rid, user=member.id)
            await live_one.until("w", lambda e: e["__typename"] == "ParticipantLeft")
            release.set()  # the stream has processed the removal: the attach must see it
            assert await removed.error("s", 5.0) == ["FORBIDDEN"]
    assert rereads == [watcher.id, member.id]

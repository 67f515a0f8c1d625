"""Typing (ephemeral, rate limited, expiring, cleared by a post) and presence (online while a
socket subscribes, offline after the last one closes and a grace period, no flicker on a
quick reconnect), seen by another participant over a real WebSocket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.conftest import make_settings as settings_for
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.rt_helpers import EVENTS, EVENTS_SLIM, TYPING, attached, send
from tests.wsclient import WSClient, connect

GRACE = 0.5
ONLINE = """
query($room: ID!, $user: ID!) {
  room(id: $room) { participants { online user { id } } }
  user(id: $user) { online }
}"""


@pytest.fixture(scope="module")
def graced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(settings_for(tmp_path_factory.mktemp("graced"),
                                      presence_grace_seconds=GRACE)).start()
    yield server
    server.stop()


@pytest.fixture
async def crowd(graced: LiveServer) -> AsyncIterator[People]:
    graced.wipe()
    people = People(graced.settings, graced.url)
    yield people
    await people.aclose()


async def trio(people: People) -> tuple[Persona, Persona, Persona, str]:
    host, member, watcher = (people.make_user("doctor") for _ in range(3))
    await register(host, member, watcher)
    room = await make_room(host, invite=[member, watcher])
    return host, member, watcher, room["id"]


def typing_of(user: Persona) -> Any:
    return lambda e: e["__typename"] == "TypingChanged" and e["user"]["id"] == user.id


def presence_of(user: Persona) -> Any:
    return lambda e: e["__typename"] == "PresenceChanged" and e["user"]["id"] == user.id


async def watch(live: LiveServer, watcher: Persona, room_id: str, count: int = 1) -> WSClient:
    client = await connect(live.ws_url, watcher.token)
    await client.subscribe("w", EVENTS, {"room": room_id})
    await attached(live, room_id, count)
    return client


def seen(client: WSClient, match: Any) -> list[dict[str, Any]]:
    """Every event of operation `w` so far that matches."""
    return [m["payload"]["data"]["roomEvents"] for m in client.log
            if m.get("id") == "w" and m["type"] == "next"
            and match(m["payload"]["data"]["roomEvents"])]


async def test_typing_is_published_once_and_expires(graced: LiveServer, crowd: People) -> None:
    _, typer, watcher, rid = await trio(crowd)
    async with await watch(graced, watcher, rid) as client:
        started = time.monotonic()
        assert await typer.gql(TYPING, room=rid, typing=True) == {"setTyping": True}
        (event,) = [e for e in await client.until("w", typing_of(typer)) if typing_of(typer)(e)]
        assert event["typing"] is True
        # Refreshes: within a second of the last announcement they are not even published;
        # later ones extend the expiry without telling anyone again.
        for at in (0.3, 0.6, 1.4, 2.0):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            await typer.gql(TYPING, room=rid, typing=True)
        last_refresh = time.monotonic()
        await client.quiet(2.5, id="w")
        ended = await client.until("w", typing_of(typer), timeout=8)
        waited = time.monotonic() - last_refresh
        assert ended[-1]["typing"] is False
        # Expiry is 5 s after the last refresh; seconds of margin for a loaded machine.
        assert 4.0 <= waited <= 10.0, f"typing expired {waited:.1f}s after the last refresh"
        assert [e["typing"] for e in seen(client, typing_of(typer))] == [True, False]
        await client.quiet(1.0, id="w")


async def test_explicit_stop_and_posting_clear_typing(graced: LiveServer,
                                                      crowd: People) -> None:
    _, typer, watcher, rid = await trio(crowd)
    async with await watch(graced, watcher, rid) as client:
        await typer.gql(TYPING, room=rid, typing=True)
        await client.until("w", typing_of(typer))
        await typer.gql(TYPING, room=rid, typing=False)
        assert (await client.until("w", typing_of(typer)))[-1]["typing"] is False
        # A new start right after a stop is not swallowed by the refresh rate limit.
        await typer.gql(TYPING, room=rid, typing=True)
        assert (await client.until("w", typing_of(typer)))[-1]["typing"] is True

        posted = await send(typer, rid, "done typing")
        started = time.monotonic()
        events = await client.until("w", typing_of(typer), timeout=2)
        assert time.monotonic() - started < 1.0
        assert events[-1]["typing"] is False
        assert [e["message"]["id"] for e in events if e["__typename"] == "MessagePosted"] == [
            posted["id"]]
        # Typing the next message right away shows again.
        await typer.gql(TYPING, room=rid, typing=True)
        assert (await client.until("w", typing_of(typer)))[-1]["typing"] is True
        await typer.gql(TYPING, room=rid, typing=False)
        await client.until("w", typing_of(typer))
        # Nothing left to expire later.
        await client.quiet(5.5, id="w")
    assert [e["typing"] for e in seen(client, typing_of(typer))] == [
        True, False, True, False, True, False]


async def online(who: Persona, room_id: str, user: Persona) -> tuple[bool, bool]:
    data = await who.gql(ONLINE, room=room_id, user=user.id)
    (participant,) = [p for p in data["room"]["participants"] if p["user"]["id"] == user.id]
    return participant["online"], data["user"]["online"]


async def test_presence_follows_the_last_socket_with_a_grace_period(
        graced: LiveServer, crowd: People) -> None:
    host, member, watcher, rid = await trio(crowd)
    async with await watch(graced, watcher, rid) as client:
        assert await online(host, rid, member) == (False, False)
        first = await connect(graced.ws_url, member.token)
        await first.subscribe("a", EVENTS_SLIM, {"room": rid})
        (came,) = [e for e in await client.until("w", presence_of(member))
                   if presence_of(member)(e)]
        assert came["online"] is True
        assert await online(host, rid, member) == (True, True)

        second = await connect(graced.ws_url, member.token)
        await second.subscribe("b", EVENTS_SLIM, {"room": rid})
        await attached(graced, rid, 3)
        await first.close()
        await attached(graced, rid, 2)
        await client.quiet(GRACE + 1.0, id="w")  # one socket is left: still online
        assert await online(host, rid, member) == (True, True)

        await second.close()
        closed = time.monotonic()
        gone = (await client.until("w", presence_of(member), timeout=GRACE + 3))[-1]
        waited = time.monotonic() - closed
        assert gone["online"] is False
        assert GRACE - 0.2 <= waited <= GRACE + 2.0, waited
        assert await online(host, rid, member) == (False, False)
    assert [e["online"] for e in seen(client, presence_of(member))] == [True, False]


async def test_reconnecting_within_the_grace_period_does_not_flicker(
        graced: LiveServer, crowd: People) -> None:
    host, member, watcher, rid = await trio(crowd)
    async with await watch(graced, watcher, rid) as client:
        socket = await connect(graced.ws_url, member.token)
        await socket.subscribe("a", EVENTS, {"room": rid, "after": None})
        await client.until("w", presence_of(member))
        for _ in range(3):  # a flaky network: drop and come back quickly, several times
            await socket.close()
            socket = await connect(graced.ws_url, member.token)
            await socket.subscribe("a", EVENTS, {"room": rid})
            await attached(graced, rid, 2)
        await client.quiet(GRACE + 1.0, id="w")
        assert await online(host, rid, member) == (True, True)
        await socket.close()
        assert (await client.until("w", presence_of(member), timeout=GRACE + 3))[-1][
            "online"] is False
    assert [e["online"] for e in seen(client, presence_of(member))] == [True, False]


async def test_a_refresh_extends_typing(graced: LiveServer, crowd: People) -> None:
    """Refreshes a little over a second apart, for longer than the 5 s expiry: typing stays
    on throughout (without extension it would end 5 s after the start), then ends about 5 s
    after the last refresh. Margins are seconds wide: the machine may be loaded."""
    _, typer, watcher, rid = await trio(crowd)
    async with await watch(graced, watcher, rid) as client:
        started = time.monotonic()
        for at in (0.0, 1.2, 2.4, 3.6, 4.8, 6.0, 7.2):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            assert await typer.gql(TYPING, room=rid, typing=True) == {"setTyping": True}
        last_refresh = time.monotonic()
        assert [e["typing"] for e in seen(client, typing_of(typer))] == [True]
        ended = await client.until("w", lambda e: typing_of(typer)(e) and not e["typing"],
                                   timeout=10)
        waited = time.monotonic() - last_refresh
        assert 3.5 <= waited <= 9.0, f"typing ended {waited:.1f}s after the last refresh"
        assert [e["typing"] for e in seen(client, typing_of(typer))] == [True, False]
        assert ended[-1]["typing"] is False

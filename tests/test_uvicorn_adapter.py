"""The fan-out's fast path reads uvicorn's private WebSocket internals (behind
transport/uvicorn_adapter.py). These tests fail loudly when an upgrade moves them, show the
direct path is what `make run`'s settings give, and that any other server still gets every
event (through ASGI send) with a warning saying so."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, make_room
from tests.rt_helpers import EVENTS, attached, send
from tests.wsclient import connect
from transport import uvicorn_adapter
from transport import ws as ws_transport
from transport.uvicorn_adapter import WS_IMPLEMENTATION, uvicorn_ws_options


def test_uvicorns_sansio_protocol_still_has_what_the_adapter_reads() -> None:
    assert uvicorn_adapter.sansio_internals_present(), (
        "uvicorn's WebSocketsSansIOProtocol no longer sets conn/transport/writable: "
        "update transport/uvicorn_adapter.py before raising uvicorn's upper bound")


def test_uvicorn_uses_its_receive_queue_as_the_inbox_does() -> None:
    assert uvicorn_adapter.queue_uses() <= uvicorn_adapter.QUEUE_USES, (
        "uvicorn's WebSocketsSansIOProtocol uses its receive queue differently: give "
        "transport/uvicorn_adapter.py Inbox what it now calls, as asyncio.Queue does it")


def test_uvicorn_reads_its_handshake_only_while_completing_it() -> None:
    assert uvicorn_adapter.handshake_readers() == {
        "request": {"handle_connect"}, "response": {"handle_connect", "send"}}, (
        "uvicorn's WebSocketsSansIOProtocol reads its handshake elsewhere now: check that "
        "transport/uvicorn_adapter.py release_handshake may still drop it once complete")


def test_make_run_uses_the_sansio_protocol_without_deflate() -> None:
    options = uvicorn_ws_options(30, 1024 * 1024)
    assert options["ws"] == WS_IMPLEMENTATION == "websockets-sansio"
    assert options["ws_per_message_deflate"] is False
    assert uvicorn_adapter.log_fanout_path(options["ws"]) is True


def outboxes(live: LiveServer, room_id: str) -> list[object]:
    async def read() -> list[object]:
        stream = live.services.hub.stream_of(room_id)
        assert stream is not None
        return [sub.outbox for group in stream.groups.values() for sub in group.values()]

    return live.call(read())


async def follow_a_room(live: LiveServer) -> tuple[list[object], list[str], list[str]]:
    """A real subscription: its server-side outboxes, what was sent, what arrived."""
    people = People(live.settings, live.url)
    try:
        host, member = people.make_user("doctor"), people.make_user("student")
        await register(host, member)
        room = (await make_room(host, invite=[member]))["id"]
        async with await connect(live.ws_url, member.token) as client:
            await client.subscribe("s", EVENTS, {"room": room})
            await attached(live, room, 1)
            found = outboxes(live, room)
            sent = [(await send(host, room, f"m{n}"))["id"] for n in range(5)]
            events = await client.durable("s", 5)
        return found, sent, [e["message"]["id"] for e in events]
    finally:
        await people.aclose()


async def test_the_direct_path_is_active_under_make_run_settings(live: LiveServer) -> None:
    assert live.server.config.ws == uvicorn_ws_options(30, 1024 * 1024)["ws"]
    found, sent, received = await follow_a_room(live)
    assert [getattr(o, "_direct", None) is not None for o in found] == [True]
    assert received == sent
    # What the socket's protocol kept: an Inbox for a queue, no copy of its handshake.
    outbox: Any = found[0]
    protocol = outbox._send.__self__
    assert type(protocol.queue) is uvicorn_adapter.Inbox
    assert (protocol.request, protocol.response) == (None, None)


@pytest.fixture(scope="module")
def plain_websockets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with warnings.catch_warnings():  # uvicorn deprecates its legacy protocol: beside the point
        warnings.simplefilter("ignore")
        server = LiveServer(make_settings(tmp_path_factory.mktemp("plain")),
                            ws_options={"ws": "websockets"}).start()
    yield server
    server.stop()


# uvicorn's legacy `websockets` protocol: deprecated, which is beside the point here.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_another_protocol_falls_back_to_asgi_send_and_says_so(
        plain_websockets: LiveServer, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_transport, "_fallback_warned", False)  # warned once per process
    with caplog.at_level(logging.WARNING, logger="transport.ws"):
        found, sent, received = await follow_a_room(plain_websockets)
    assert [getattr(o, "_direct", "missing") for o in found] == [None]
    assert received == sent
    assert any("frames go through ASGI send" in r.getMessage() for r in caplog.records)
    assert uvicorn_adapter.log_fanout_path("websockets") is False

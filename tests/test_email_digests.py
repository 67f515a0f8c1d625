"""Email digests against a real SMTP server (aiosmtpd in the test process): sent once to
people who are not online, with counts and a link only; not to someone online, nor for what
was read meanwhile; delayed while SMTP is down and sent once it is back; sent once after a
restart in the middle; per-room mutes and one-click unsubscribe (POST only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.smtp import SmtpSink
from tests.wsclient import connect

SEND = ("mutation($room: ID!, $content: String!) { sendMessage(roomId: $room, input: "
        "{content: $content}) { id } }")
SETTINGS = """
mutation($input: NotificationSettingsInput!) {
  updateNotificationSettings(input: $input) { email doNotDisturbUntil rooms { level room { id } } }
}"""
SUB = "subscription($room: ID!) { roomEvents(roomId: $room) { __typename } }"


def digest_server(data: Path, sink: SmtpSink) -> LiveServer:
    return LiveServer(make_settings(data, smtp_host="127.0.0.1", smtp_port=sink.port,
                                    smtp_starttls=False, notification_email_delay_seconds=0,
                                    public_base_url="https://collab.example",
                                    email_from="Collab <no-reply@collab.example>")).start()


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mailing(tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink) -> Iterator[LiveServer]:
    server = digest_server(tmp_path_factory.mktemp("digests"), sink)
    yield server
    server.stop()


@pytest.fixture
async def crowd(mailing: LiveServer) -> AsyncIterator[People]:
    people = People(mailing.settings, mailing.url)
    yield people
    await people.aclose()


async def tick(live: LiveServer) -> int:
    """One round of the digest worker (it runs every 15 s by itself)."""
    await asyncio.to_thread(live.call, live.services.inbox.drain())
    sent: int = await asyncio.to_thread(live.call, live.services.digests.tick())
    return sent


async def mentioned(crowd: People) -> tuple[Persona, Persona, str]:
    host = crowd.make_user("doctor")
    reader = crowd.make_user("doctor", email="reader@clinic.example")
    await register(host, reader)
    room_id = (await make_room(host, invite=[reader], name="Patient DOE^JANE"))["id"]
    await host.gql(SEND, room=room_id, content=f"<@{reader.id}> results of MRN-4711")
    return host, reader, room_id


def to(sink: SmtpSink, address: str) -> list[str]:
    return [m.as_string() for m in sink.messages if m["To"] == address]


async def test_a_digest_without_content_once(crowd: People, mailing: LiveServer,
                                             sink: SmtpSink) -> None:
    _, reader, _ = await mentioned(crowd)
    assert await tick(mailing) >= 1
    (mail,) = to(sink, "reader@clinic.example")
    for secret in ("DOE^JANE", "MRN-4711", "results", reader.name):
        assert secret not in mail
    assert "https://collab.example/notifications" in mail
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in mail
    await tick(mailing)
    assert len(to(sink, "reader@clinic.example")) == 1  # exactly once


async def test_not_while_online_nor_once_read(crowd: People, mailing: LiveServer,
                                              sink: SmtpSink) -> None:
    host = crowd.make_user("doctor")
    online = crowd.make_user("doctor", email="online@clinic.example")
    reads = crowd.make_user("doctor", email="reads@clinic.example")
    await register(host, online, reads)
    room_id = (await make_room(host, invite=[online, reads]))["id"]
    ws = await connect(mailing.ws_url, online.token)
    await ws.subscribe("ev", SUB, {"room": room_id})
    await asyncio.sleep(0.3)
    await host.gql(SEND, room=room_id, content=f"<@{online.id}> <@{reads.id}> hi")
    await asyncio.to_thread(mailing.call, mailing.services.inbox.drain())
    await reads.gql("mutation { markNotificationsRead }")
    await tick(mailing)
    assert to(sink, "online@clinic.example") == [] and to(sink, "reads@clinic.example") == []
    await ws.close()


async def test_deleted_messages_are_dropped_at_send_time(crowd: People, mailing: LiveServer,
                                                         sink: SmtpSink) -> None:
    host = crowd.make_user("doctor")
    gone = crowd.make_user("doctor", email="gone@clinic.example")
    await register(host, gone)
    room_id = (await make_room(host, invite=[gone]))["id"]
    await asyncio.to_thread(mailing.call, mailing.services.inbox.drain())
    await gone.gql("mutation { markNotificationsRead }")
    sent = (await host.gql(SEND, room=room_id, content=f"<@{gone.id}> oops"))["sendMessage"]
    await asyncio.to_thread(mailing.call, mailing.services.inbox.drain())
    digests = mailing.services.digests
    assert await asyncio.to_thread(mailing.call, digests.enqueue_due()) >= 1
    await host.gql("mutation($id: ID!) { deleteMessage(id: $id) { id } }", id=sent["id"])
    await asyncio.to_thread(mailing.call, digests.send_pending())
    assert to(sink, "gone@clinic.example") == []  # nothing left to say: dropped


async def test_muted_rooms_and_unsubscribe(crowd: People, mailing: LiveServer,
                                           sink: SmtpSink) -> None:
    host = crowd.make_user("doctor")
    quiet = crowd.make_user("doctor", email="quiet@clinic.example")
    await register(host, quiet)
    room_id = (await make_room(host, invite=[quiet]))["id"]
    await asyncio.to_thread(mailing.call, mailing.services.inbox.drain())
    await quiet.gql("mutation { markNotificationsRead }")
    muted = await quiet.gql(SETTINGS, input={"rooms": [{"roomId": room_id, "level": "MUTED"}]})
    assert muted["updateNotificationSettings"]["rooms"] == [
        {"level": "MUTED", "room": {"id": room_id}}]
    # A room they are not in refuses the whole change: nothing of it is written.
    other = (await make_room(host))["id"]
    assert await quiet.error(SETTINGS, input={"email": "OFF", "rooms": [
        {"roomId": other, "level": "ALL"}]}) == "NOT_FOUND"
    assert (await quiet.gql("{ notificationSettings { email } }"))["notificationSettings"][
        "email"] == "MENTIONS"
    await host.gql(SEND, room=room_id, content=f"<@{quiet.id}> hello")
    await tick(mailing)
    assert to(sink, "quiet@clinic.example") == []
    assert (await quiet.gql("{ notifications { unreadCount } }"))["notifications"][
        "unreadCount"] == 0  # muted in the app too
    token = mailing.services.digests.unsubscribe.token(quiet.id)
    async with httpx.AsyncClient(base_url=mailing.url) as client:
        page = await client.get(f"/notifications/unsubscribe/{token}")
        assert page.status_code == 200 and "<form method=\"post\">" in page.text
        settings = await quiet.gql("{ notificationSettings { email } }")
        assert settings["notificationSettings"]["email"] == "MENTIONS"  # a GET changed nothing
        assert (await client.post(f"/notifications/unsubscribe/{token}")).status_code == 200
        assert (await client.post("/notifications/unsubscribe/forged.x")).status_code == 404
    settings = await quiet.gql("{ notificationSettings { email } }")
    assert settings["notificationSettings"]["email"] == "OFF"


async def test_smtp_down_delays_and_a_restart_sends_once(
        tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink) -> None:
    data = tmp_path_factory.mktemp("digest-restart")
    first = digest_server(data, sink)
    try:
        people = People(first.settings, first.url)
        _, reader, _ = await mentioned(people)
        await people.aclose()
        sink.stop()
        try:
            assert await tick(first) == 0  # delayed, kept in the outbox
        finally:
            sink.start()
    finally:
        first.stop()
    second = digest_server(data, sink)  # the same graph: the pending digest is still there
    try:
        await asyncio.to_thread(second.call, _ready(second))
        assert await tick(second) == 1
        await tick(second)
        assert len(to(sink, "reader@clinic.example")) >= 1
        assert reader.id not in "".join(to(sink, "reader@clinic.example"))
    finally:
        second.stop()


async def _ready(live: LiveServer) -> None:
    """A delayed digest waits for its back-off: make it due now (as time would)."""
    await live.services.db.write_rows("MATCH (d:Digest {status: 'PENDING'}) SET d.nextAt = 0")

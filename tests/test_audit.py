"""The audit trail (README "Audit trail") over real HTTP and WebSocket: one record per read
and write of room content, per denial (NOT_FOUND included), per new session and per
subscription start and end; ids only, never content or tokens; administrators query it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auth.tokens import session_of
from graph_db.audit import AuditRecord, Outcome
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.rt_helpers import EVENTS, SEND, attached
from tests.wsclient import Closed, connect

AUDIT = """
query($filter: AuditFilter, $first: Int, $after: String) {
  auditEvents(filter: $filter, first: $first, after: $after) {
    edges { cursor node { id at action outcome code actorId actorRole objectType objectId
                          roomId requestId clientAddress userAgent } }
    pageInfo { hasNextPage endCursor }
  }
}"""
ROOM_PAGE = "query($id: ID!) { room(id: $id) { id messages(last: 10) { edges { node { id } } } } }"
EDIT = "mutation($id: ID!) { editMessage(id: $id, content: \"changed\") { id } }"
REMOVE = ("mutation($room: ID!, $user: ID!) "
          "{ removeParticipant(roomId: $room, userId: $user) { id } }")
JOIN = "mutation($id: ID!) { joinRoom(id: $id) { status } }"


def flush(live: LiveServer) -> None:
    live.call(live.services.audit.flush())


async def trail(live: LiveServer, admin: Persona, **filter: Any) -> list[dict[str, Any]]:
    """The whole trail matching `filter`, newest first, written out first."""
    await asyncio.to_thread(flush, live)
    found: list[dict[str, Any]] = []
    after = None
    while True:
        data = await admin.gql(AUDIT, filter=filter, first=100, after=after)
        page = data["auditEvents"]
        found += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]


def actions(records: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """(action, outcome, code), oldest first."""
    return [(r["action"], r["outcome"], r["code"]) for r in reversed(records)]


async def test_reads_writes_and_denials_of_a_room(fresh: LiveServer, people: People) -> None:
    host, outsider = people.make_user("doctor"), people.make_user("patient")
    admin = people.make_user("admin")
    room = (await make_room(host))["id"]
    marker = f"content-{uuid.uuid4().hex}"
    sent = (await host.gql(SEND, room=room, content=marker))["sendMessage"]
    await host.gql(ROOM_PAGE, id=room)
    assert (await outsider.gql(ROOM_PAGE, id=room))["room"] is None  # cannot tell
    assert await outsider.error(EDIT, id=sent["id"]) == "NOT_FOUND"

    by_host = await trail(fresh, admin, actorId=host.id, roomId=room)
    assert actions(by_host) == [
        ("mutation.createRoom", "ALLOWED", None), ("mutation.sendMessage", "ALLOWED", None),
        ("query.room", "ALLOWED", None), ("read.Room.messages", "ALLOWED", None)]
    send = next(r for r in by_host if r["action"] == "mutation.sendMessage")
    assert (send["objectType"], send["objectId"], send["roomId"]) == ("Message", sent["id"], room)
    assert (send["actorRole"], send["clientAddress"]) == ("DOCTOR", "127.0.0.1")
    assert send["userAgent"].startswith("python-httpx/") and send["requestId"]
    at = datetime.fromisoformat(send["at"])
    assert at.tzinfo is not None and abs(datetime.now(UTC) - at) < timedelta(minutes=1)

    by_outsider = await trail(fresh, admin, actorId=outsider.id)
    assert [(a, o, c) for a, o, c in actions(by_outsider) if a != "session.start"] == [
        ("query.room", "DENIED", "NOT_FOUND"), ("mutation.editMessage", "DENIED", "NOT_FOUND")]
    edit = by_outsider[0]
    assert (edit["objectType"], edit["objectId"], edit["roomId"]) == ("Message", sent["id"], room)
    everything = str(await trail(fresh, admin))
    assert marker not in everything and host.token not in everything


async def test_a_session_starts_once_per_token(fresh: LiveServer, people: People) -> None:
    doctor, admin = people.make_user("doctor"), people.make_user("admin")
    for _ in range(3):
        await doctor.gql("{ me { id } }")
    again = doctor.token
    doctor.token = people.token_for(doctor.id, doctor.name, doctor.role,
                                    ttl=timedelta(minutes=30))  # a new session
    await doctor.gql("{ me { id } }")
    async with await connect(fresh.ws_url, again):
        pass  # the first token over a socket: not a new session
    sessions = await trail(fresh, admin, actorId=doctor.id, action="session.start")
    assert len(sessions) == 2 and len({s["objectId"] for s in sessions}) == 2
    assert all(again not in str(s) and doctor.token not in str(s) for s in sessions)


async def test_a_refused_token_is_recorded_once(fresh: LiveServer, people: People) -> None:
    admin, doctor = people.make_user("admin"), people.make_user("doctor")
    forged = doctor.token[:-4] + ("AAAA" if not doctor.token.endswith("AAAA") else "BBBB")
    doctor.token = forged
    for _ in range(3):
        assert await doctor.error("{ room(id: \"x\") { id } }") == "UNAUTHENTICATED"
    with pytest.raises(Closed):
        async with await connect(fresh.ws_url, forged):
            pass
    refused = [r for r in await trail(fresh, admin, action="session.start", outcome="DENIED")
               if r["objectId"] == session_of(forged)]
    assert [(r["actorId"], r["code"]) for r in refused] == [(None, "UNAUTHENTICATED")]
    queries = await trail(fresh, admin, action="query.room", outcome="DENIED")
    assert [r["code"] for r in queries if r["actorId"] is None][-3:] == ["UNAUTHENTICATED"] * 3


async def test_subscriptions_start_and_end(fresh: LiveServer, people: People) -> None:
    host, member, stranger = (people.make_user("doctor"), people.make_user("student"),
                              people.make_user("student"))
    admin = people.make_user("admin")
    await register(member)
    room = (await make_room(host, invite=[member]))["id"]
    await member.gql(JOIN, id=room)
    async with await connect(fresh.ws_url, member.token) as ws, \
            await connect(fresh.ws_url, stranger.token) as other:
        await ws.subscribe("a", EVENTS, {"room": room})
        await ws.subscribe("b", EVENTS, {"room": room})
        await other.subscribe("x", EVENTS, {"room": room})
        assert await other.error("x") == ["NOT_FOUND"]
        await attached(fresh, room, 2)
        await ws.complete("a")
        await attached(fresh, room, 1)
        for i in range(5):  # deliveries are not audited
            await host.gql(SEND, room=room, content=f"m{i}")
        await host.gql(REMOVE, room=room, user=member.id)
        assert await ws.error("b") == ["FORBIDDEN"]
    by_member = await trail(fresh, admin, actorId=member.id, roomId=room)
    assert [a for a in actions(by_member) if a[0].startswith("subscription.")] == [
        ("subscription.start", "ALLOWED", None), ("subscription.start", "ALLOWED", None),
        ("subscription.end", "ALLOWED", None), ("subscription.end", "DENIED", "FORBIDDEN")]
    by_stranger = await trail(fresh, admin, actorId=stranger.id, roomId=room)
    assert actions(by_stranger) == [("subscription.start", "DENIED", "NOT_FOUND")]


async def test_filters_pages_and_who_may_read(fresh: LiveServer, people: People) -> None:
    host, admin = people.make_user("doctor"), people.make_user("admin")
    room = (await make_room(host))["id"]
    # The trail keeps milliseconds: the window starts a millisecond after createRoom's record
    # (which can share `now`'s millisecond), and the sends come after it.
    started = datetime.now(UTC) + timedelta(milliseconds=1)
    await asyncio.sleep(0.002)
    for i in range(7):
        await host.gql(SEND, room=room, content=f"m{i}")
    await asyncio.to_thread(flush, fresh)
    sends = await trail(fresh, admin, roomId=room, action="mutation.sendMessage")
    assert len(sends) == 7
    assert [r["at"] for r in sends] == sorted((r["at"] for r in sends), reverse=True)
    pages, after = [], None
    for _ in range(4):
        data = await admin.gql(AUDIT, filter={"roomId": room, "action": "mutation.sendMessage"},
                               first=3, after=after)
        pages.append([e["node"]["id"] for e in data["auditEvents"]["edges"]])
        after = data["auditEvents"]["pageInfo"]["endCursor"]
    assert [len(p) for p in pages] == [3, 3, 1, 0]
    assert [i for page in pages for i in page] == [r["id"] for r in sends]
    window = {"roomId": room, "from": started.isoformat(),
              "to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    assert len(await trail(fresh, admin, **window, outcome="ALLOWED")) == 7
    assert await trail(fresh, admin, roomId=room, outcome="DENIED") == []
    assert await host.error(AUDIT) == "FORBIDDEN"
    assert await admin.error(AUDIT, filter={"from": "2026-01-02T00:00:00Z",
                                            "to": "2026-01-01T00:00:00Z"}) == "BAD_USER_INPUT"
    refused = await trail(fresh, admin, actorId=host.id, action="query.auditEvents")
    assert actions(refused) == [("query.auditEvents", "DENIED", "FORBIDDEN")]


async def test_deleting_a_room_keeps_its_trail(fresh: LiveServer, people: People) -> None:
    host, admin = people.make_user("doctor"), people.make_user("admin")
    room = (await make_room(host))["id"]
    await host.gql("mutation($id: ID!) { deleteRoom(id: $id) }", id=room)
    assert [a for a, _, _ in actions(await trail(fresh, admin, roomId=room))] == [
        "mutation.createRoom", "mutation.deleteRoom"]


def test_records_are_written_in_batches(fresh: LiveServer) -> None:
    """1,000 records cost a couple of statements, written off the request path."""
    services = fresh.services

    async def record_many() -> int:
        await services.audit.flush()
        before = services.db.stats.background
        for i in range(1000):
            services.audit.record(AuditRecord(id=uuid.uuid4().hex, at_ms=i,
                                              action="test.batch", outcome=Outcome.ALLOWED))
        await services.audit.flush()
        return services.db.stats.background - before

    assert fresh.call(record_many()) <= 3

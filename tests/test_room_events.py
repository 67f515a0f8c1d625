"""roomEvents over a real WebSocket: ordering under concurrent writers, resuming with a
cursor, snapshot + events == a fresh query, cursor errors, who may subscribe, and how
removal and deletion end a subscription."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from graph_db import events as event_log
from realtime import cursor as event_cursor
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.rt_helpers import (
    DELETE,
    DELETE_ROOM,
    EDIT,
    EVENTS,
    EVENTS_SLIM,
    JOIN,
    MESSAGE_FIELDS,
    REACT,
    REMOVE,
    SET_ROLE,
    UNREACT,
    all_messages,
    attached,
    head_seq,
    send,
    stored_events,
)
from tests.wsclient import DURABLE, connect, seq_of

SENDERS, PER_SENDER = 10, 100


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [seq_of(e["cursor"]) for e in events]


async def room_of(people: People, members: int, **kw: Any
                  ) -> tuple[Persona, list[Persona], dict[str, Any]]:
    host = people.make_user("doctor")
    others = [people.make_user("doctor") for _ in range(members)]
    await register(host, *others)
    room = await make_room(host, invite=others, **kw)
    return host, others, room


async def test_concurrent_senders_every_subscriber_sees_the_stored_order(
        fresh: LiveServer, people: People) -> None:
    host, members, room = await room_of(people, SENDERS + 3)
    senders, watchers = members[:SENDERS], members[SENDERS:]
    rid = room["id"]
    head = head_seq(fresh, rid)
    clients = [await connect(fresh.ws_url, w.token) for w in watchers]
    try:
        # Two watchers share a selection set (one group), the third has its own.
        await clients[0].subscribe("a", EVENTS, {"room": rid})
        await clients[1].subscribe("b", EVENTS, {"room": rid})
        await attached(fresh, rid, 2)

        async def sender(who: Persona, index: int) -> list[int]:
            return [(await send(who, rid, f"{index}-{n}"))["seq"] for n in range(PER_SENDER)]

        started = time.monotonic()
        writers = asyncio.gather(*(sender(s, i) for i, s in enumerate(senders)))
        total = SENDERS * PER_SENDER
        # The third one arrives mid-burst, resuming from `head`: some messages stored, the
        # writers still going when it is attached.
        while head_seq(fresh, rid) < head + 50:
            await asyncio.sleep(0.05)
        await clients[2].subscribe("c", EVENTS_SLIM,
                                   {"room": rid, "after": event_cursor.encode(rid, head)})
        await attached(fresh, rid, 3)
        at_join = head_seq(fresh, rid)
        assert not writers.done() and at_join < head + total, "c joined after the burst"
        own = await writers
        elapsed = time.monotonic() - started
        got = [await clients[0].durable("a", total, 60), await clients[1].durable("b", total, 60),
               await clients[2].durable("c", total, 60)]
    finally:
        for client in clients:
            await client.close()

    stored = await all_messages(host, rid)
    assert len(stored) == total
    stored_seqs = [m["seq"] for m in stored]
    assert stored_seqs == list(range(head + 1, head + total + 1)), "gaps in the stored seqs"
    assert [e.seq for e in stored_events(fresh, rid, head)] == stored_seqs
    for events in got:
        assert seqs(events) == stored_seqs
        assert [e["__typename"] for e in events] == ["MessagePosted"] * total
        assert [e["message"]["seq"] for e in events] == stored_seqs
        assert [e["message"]["id"] for e in events] == [m["id"] for m in stored]
    for mine in own:  # each sender's messages in the order it sent them
        assert mine == sorted(mine)
    assert elapsed < 300, f"{total} messages took {elapsed:.0f}s"
    for client, op in zip(clients, "abc", strict=True):
        assert not [m for m in client.pending(op) if m["type"] != "next"]


async def test_resume_replays_exactly_what_was_missed_then_goes_live(
        fresh: LiveServer, people: People) -> None:
    host, (member, other), room = await room_of(people, 2, visibility="PUBLIC")
    joiner = people.make_user("teacher")
    rid = room["id"]
    async with await connect(fresh.ws_url, member.token) as client:
        await client.subscribe("s", EVENTS, {"room": rid})
        await attached(fresh, rid, 1)
        first = [await send(host, rid, f"before {n}") for n in range(3)]
        seen = await client.durable("s", 3)
        assert [e["message"]["id"] for e in seen] == [m["id"] for m in first]
    last = seen[-1]["cursor"]
    await attached(fresh, rid, 0)

    missed = [await send(other, rid, f"missed {n}") for n in range(5)]
    await host.gql(EDIT, id=first[0]["id"], content="edited while away")
    await other.gql(REACT, id=missed[1]["id"], emoji="👍")
    await joiner.gql(JOIN, id=rid)
    expected = stored_events(fresh, rid, seq_of(last))
    assert [e.type.value for e in expected] == (["MessagePosted"] * 5 + [
        "MessageEdited", "ReactionsChanged", "ParticipantJoined"])

    async with await connect(fresh.ws_url, member.token) as client:
        await client.subscribe("s", EVENTS, {"room": rid, "after": last})
        # Writers keep going while the replay runs: the seam is crossed under load.
        live_sends = asyncio.gather(*(send(other, rid, f"live {n}") for n in range(5)))
        replayed = await client.durable("s", len(expected) + 5, 30)
        live_ids = {m["id"] for m in await live_sends}
        await asyncio.sleep(0.5)
        extra = [m for m in client.pending("s")
                 if m["payload"]["data"]["roomEvents"]["__typename"] in DURABLE]
        assert extra == [], "duplicates after the seam"

    got = seqs(replayed)
    assert got == list(range(seq_of(last) + 1, seq_of(last) + len(expected) + 6))
    assert got[:len(expected)] == [e.seq for e in expected]
    assert [e["__typename"] for e in replayed[:len(expected)]] == [
        e.type.value for e in expected]
    assert [e["message"]["id"] for e in replayed[:5]] == [m["id"] for m in missed]
    assert replayed[5]["message"]["content"] == "edited while away"
    assert replayed[6]["message"]["reactions"] == [{"emoji": "👍", "count": 1}]
    assert replayed[7]["participant"]["user"]["id"] == joiner.id
    assert {e["message"]["id"] for e in replayed[len(expected):]} == live_ids


SNAPSHOT = f"""
query($room: ID!) {{
  room(id: $room) {{ messages(last: 100) {{ edges {{ node {{ {MESSAGE_FIELDS} }} }} }} }}
}}"""


async def test_snapshot_plus_events_equals_a_fresh_query(fresh: LiveServer,
                                                          people: People) -> None:
    host, (viewer, other), room = await room_of(people, 2)
    rid = room["id"]
    old = [await send(host, rid, f"old {n}") for n in range(3)]
    await host.gql(REACT, id=old[0]["id"], emoji="🔥")
    async with await connect(fresh.ws_url, viewer.token) as client:
        await client.subscribe("s", EVENTS, {"room": rid})
        await attached(fresh, rid, 1)
        data = await viewer.gql(SNAPSHOT, room=rid)
        state = {e["node"]["id"]: e["node"] for e in data["room"]["messages"]["edges"]}

        new = [await send(p, rid, f"new {n}") for n, p in enumerate([host, other, viewer])]
        await host.gql(EDIT, id=old[1]["id"], content="old 1, edited")
        await other.gql(EDIT, id=new[1]["id"], content="new 1, edited")
        await host.gql(DELETE, id=old[2]["id"])
        await other.gql(REACT, id=old[0]["id"], emoji="🔥")
        await other.gql(REACT, id=new[0]["id"], emoji="✅")
        await viewer.gql(REACT, id=new[0]["id"], emoji="✅")
        await viewer.gql(UNREACT, id=new[0]["id"], emoji="✅")
        await other.gql(DELETE, id=new[1]["id"])
        events = await client.durable("s", 11)

    for event in events:
        message = event["message"]
        if event["__typename"] == "MessagePosted":
            assert message["id"] not in state
        else:
            assert message["id"] in state
        state[message["id"]] = message
    applied = sorted(state.values(), key=lambda m: m["seq"])
    data = await viewer.gql(SNAPSHOT, room=rid)
    assert applied == [e["node"] for e in data["room"]["messages"]["edges"]]
    assert [e["__typename"] for e in events] == (
        ["MessagePosted"] * 3 + ["MessageEdited"] * 2 + ["MessageDeleted"]
        + ["ReactionsChanged"] * 4 + ["MessageDeleted"])


async def test_cursor_errors(fresh: LiveServer, people: People) -> None:
    host, (member,), room = await room_of(people, 1)
    other_host, _, elsewhere = await room_of(people, 0)
    rid = room["id"]
    sent = [await send(host, rid, f"m{n}") for n in range(5)]
    await send(other_host, elsewhere["id"], "elsewhere")
    async with await connect(fresh.ws_url, member.token) as client:
        async def codes(op: str, after: str) -> list[str]:
            await client.subscribe(op, EVENTS, {"room": rid, "after": after})
            found = await client.error(op)
            await client.quiet(0.2, id=op)
            assert client.pending(op) == []
            return found

        assert await codes("bad", "not a cursor!") == ["BAD_USER_INPUT"]
        assert await codes("b64", "Zm9vYmFy") == ["BAD_USER_INPUT"]  # "foobar"
        other_room = event_cursor.encode(elsewhere["id"], 1)
        assert await codes("other", other_room) == ["BAD_USER_INPUT"]
        ahead = event_cursor.encode(rid, sent[-1]["seq"] + 10)
        assert await codes("ahead", ahead) == ["BAD_USER_INPUT"]

        fresh.call(event_log.prune_events(fresh.services.db, rid, sent[3]["seq"]))
        older = event_cursor.encode(rid, sent[1]["seq"])
        assert await codes("pruned", older) == ["RESYNC_REQUIRED"]
        # Right at the pruned point is still fine: the rest of the log is there.
        await client.subscribe("ok", EVENTS,
                               {"room": rid, "after": event_cursor.encode(rid, sent[3]["seq"])})
        (event,) = await client.durable("ok", 1)
        assert event["message"]["id"] == sent[4]["id"]
        assert client.close_code is None


async def test_who_may_subscribe(fresh: LiveServer, people: People) -> None:
    host, _, private = await room_of(people, 1)
    public = await make_room(host, visibility="PUBLIC", name="Open")
    outsider, patient = people.make_user("doctor"), people.make_user("patient")
    await register(outsider, patient)
    async with await connect(fresh.ws_url, outsider.token) as client, \
            await connect(fresh.ws_url, patient.token) as patient_client:
        await client.subscribe("private", EVENTS, {"room": private["id"]})
        await client.subscribe("public", EVENTS, {"room": public["id"]})
        await client.subscribe("missing", EVENTS, {"room": "no-such-room"})
        await patient_client.subscribe("public", EVENTS, {"room": public["id"]})
        assert await client.error("private") == ["NOT_FOUND"]
        assert await client.error("public") == ["FORBIDDEN"]
        assert await client.error("missing") == ["NOT_FOUND"]
        assert await patient_client.error("public") == ["NOT_FOUND"]
        await send(host, private["id"], "not for outsiders")
        await send(host, public["id"], "members only")
        await client.quiet(0.5)
        await patient_client.quiet(0.1)
    assert sorted(m["type"] for m in client.log) == ["complete"] * 3 + ["connection_ack"] + [
        "next"] * 3


async def test_removal_ends_the_subscription_with_forbidden(fresh: LiveServer,
                                                             people: People) -> None:
    host, (member, other), room = await room_of(people, 2)
    rid = room["id"]
    async with await connect(fresh.ws_url, member.token) as removed, \
            await connect(fresh.ws_url, other.token) as stays:
        await removed.subscribe("s", EVENTS, {"room": rid})
        await removed.subscribe("slim", EVENTS_SLIM, {"room": rid})
        await stays.subscribe("s", EVENTS, {"room": rid})
        await attached(fresh, rid, 3)
        # Messages keep coming while the removal commits: none after it may reach them.
        burst = asyncio.gather(*(send(p, rid, f"around {n}")
                                 for n in range(6) for p in (host, other)))
        await host.gql(REMOVE, room=rid, user=member.id)
        started = time.monotonic()
        assert await removed.error("s", 1.0) == ["FORBIDDEN"]
        assert await removed.error("slim", 1.0) == ["FORBIDDEN"]
        assert time.monotonic() - started < 1.0
        await burst
        after = await send(host, rid, "after the removal")
        events = await stays.until("s", lambda e: e.get("message", {}).get("id") == after["id"])
        assert [e["user"]["id"] for e in events if e["__typename"] == "ParticipantLeft"] == [
            member.id]
        await removed.quiet(0.5)
        assert removed.pending("s") == removed.pending("slim") == []
        assert removed.close_code is None  # the socket itself stays usable
    (left,) = [e for e in stored_events(fresh, rid) if e.type.value == "ParticipantLeft"]
    frames = [m for m in removed.log if m["type"] == "next" and m["payload"]["data"]]
    assert all(seq_of(m["payload"]["data"]["roomEvents"]["cursor"]) <= left.seq for m in frames)
    assert [m["type"] for m in removed.log if m.get("id") == "s"][-1] == "complete"
    await attached(fresh, rid, 0)


async def test_delete_room_completes_the_subscription(fresh: LiveServer,
                                                       people: People) -> None:
    host, (member,), room = await room_of(people, 1)
    rid = room["id"]
    async with await connect(fresh.ws_url, member.token) as client:
        await client.subscribe("s", EVENTS, {"room": rid})
        await attached(fresh, rid, 1)
        await host.gql(DELETE_ROOM, id=rid)
        while (message := await client.next_message(id="s"))["type"] == "next":
            pass
        assert message == {"id": "s", "type": "complete"}
        await client.quiet(0.5)
        assert client.pending("s") == []


async def test_join_requests_reach_hosts_and_moderators_only(fresh: LiveServer,
                                                             people: People) -> None:
    host, (moderator, member), room = await room_of(people, 2)
    rid = room["id"]
    await host.gql(SET_ROLE, room=rid, user=moderator.id, role="MODERATOR")
    knocker = people.make_user("doctor")
    await register(knocker)
    start = event_cursor.encode(rid, 0)
    clients = {p.id: await connect(fresh.ws_url, p.token) for p in (host, moderator, member)}
    try:
        for client in clients.values():
            await client.subscribe("s", EVENTS, {"room": rid})
        await attached(fresh, rid, 3)
        await knocker.gql(JOIN, id=rid)
        note = await send(host, rid, "after the request")
        for who in (host, moderator):
            requested, posted = await clients[who.id].durable("s", 2)
            assert requested["__typename"] == "JoinRequested"
            assert requested["request"]["user"]["id"] == knocker.id
            assert posted["message"]["id"] == note["id"]
        (posted,) = await clients[member.id].durable("s", 1)
        assert posted["message"]["id"] == note["id"]
        # Replaying from storage hides it from members too.
        await clients[member.id].subscribe("replay", EVENTS, {"room": rid, "after": start})
        await clients[host.id].subscribe("replay", EVENTS, {"room": rid, "after": start})
        total = len(stored_events(fresh, rid))
        member_replay = await clients[member.id].durable("replay", total - 1)
        host_replay = await clients[host.id].durable("replay", total)
        assert "JoinRequested" not in [e["__typename"] for e in member_replay]
        assert [e["__typename"] for e in host_replay].count("JoinRequested") == 1
        await clients[member.id].quiet(0.5, id="replay")
    finally:
        for client in clients.values():
            await client.close()

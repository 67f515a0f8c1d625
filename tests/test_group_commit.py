"""Group commit (graph_db/group_commit.py): a room's concurrent sends share a transaction, and
nothing a sender sees changes: acknowledged means stored once with its own gap-free seq, a
failed group acknowledges none of its messages, one send's own failure fails only that send,
and a resend with the same clientMessageId in the same group still returns one message."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from graph_db.driver import DatabaseUnavailable, GraphDB
from graph_db.group_commit import GroupCommit
from graph_db.messages import NewMessage, Sent
from observability.metrics import REGISTRY
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, make_room
from tests.processes import GraphServer

SEND = """mutation($r: ID!, $c: String!) {
  sendMessage(roomId: $r, input: {content: $c}) { id seq } }"""


def new(room_id: str, author_id: str, content: str, *, message_id: str | None = None,
        client_id: str | None = None) -> NewMessage:
    return NewMessage(id=message_id or str(uuid.uuid4()), room_id=room_id,
                      author_id=author_id, content=content, parent_id=None, root_id=None,
                      client_message_id=client_id, mention_ids=[])


async def stored(db: GraphDB, room_id: str) -> list[dict[str, Any]]:
    return await db.read_rows(
        "MATCH (m:Message {roomId: $room}) OPTIONAL MATCH (e:Event {messageId: m.id}) "
        "RETURN m.id AS id, m.seq AS seq, m.content AS content, count(e) AS events "
        "ORDER BY m.seq", room=room_id)


async def test_concurrent_senders_share_transactions_in_order(
        fresh: LiveServer, people: People) -> None:
    senders = [people.make_user("doctor") for _ in range(8)]
    await register(*senders)
    room = (await make_room(senders[0], invite=senders[1:]))["id"]
    sends = fresh.services.sends
    batches, sent = sends.batches, sends.sent

    async def sender(n: int) -> list[tuple[str, int]]:
        acked = []
        for i in range(15):
            data = await senders[n].gql(SEND, r=room, c=f"{n}.{i}")
            acked.append((data["sendMessage"]["id"], data["sendMessage"]["seq"]))
        return acked

    acked = [a for r in await asyncio.gather(*(sender(n) for n in range(8))) for a in r]
    rows = fresh.call(stored(fresh.services.db, room))
    assert sorted(seq for _, seq in acked) == [r["seq"] for r in rows] == list(
        range(rows[0]["seq"], rows[0]["seq"] + 120))  # gap-free, each acknowledged once
    assert all(r["events"] == 1 for r in rows)
    for n in range(8):  # each sender's messages in the order it sent them
        mine = [r["content"] for r in rows if r["content"].startswith(f"{n}.")]
        assert mine == [f"{n}.{i}" for i in range(15)]
    assert sends.sent - sent == 120
    assert sends.batches - batches < 120  # some shared a transaction
    exposed = REGISTRY.get_sample_value("collab_message_group_size_count")
    assert exposed is not None and exposed >= sends.batches - batches


async def test_a_resend_in_the_same_group_returns_the_first_message(
        fresh: LiveServer, people: People) -> None:
    host = people.make_user("doctor")
    await register(host)
    room = (await make_room(host))["id"]
    group = GroupCommit(fresh.services.db)

    async def together() -> list[Sent | None]:
        return list(await asyncio.gather(*(
            group.send(new(room, host.id, f"try {i}", client_id="c-1")) for i in range(3))))

    answers = fresh.call(together())
    assert group.batches == 1
    assert len({a.message.id for a in answers if a}) == 1
    assert [a.event is not None for a in answers if a] == [True, False, False]
    rows = fresh.call(stored(fresh.services.db, room))
    assert [(r["content"], r["events"]) for r in rows] == [("try 0", 1)]


async def test_one_sends_own_failure_fails_only_that_send(
        fresh: LiveServer, people: People) -> None:
    """A message id already taken violates a constraint mid-group: the group's transaction
    rolls back (nothing of it stays), then each send is written alone: the others are stored
    once; that one is answered as any send of an existing key is, with the stored message
    and no new event."""
    host = people.make_user("doctor")
    await register(host)
    room = (await make_room(host))["id"]
    taken = (await host.gql(SEND, r=room, c="first"))["sendMessage"]["id"]
    group = GroupCommit(fresh.services.db)

    async def together() -> list[Sent | BaseException | None]:
        news = [new(room, host.id, "a"), new(room, host.id, "dup", message_id=taken),
                new(room, host.id, "b")]
        return list(await asyncio.gather(*(group.send(n) for n in news),
                                         return_exceptions=True))

    a, dup, b = fresh.call(together())
    assert isinstance(dup, Sent) and dup.message.id == taken and dup.event is None
    assert isinstance(a, Sent) and isinstance(b, Sent)
    assert group.batches == 0  # the group failed; the three were written one by one
    rows = fresh.call(stored(fresh.services.db, room))
    assert [(r["content"], r["events"]) for r in rows] == [("first", 1), ("a", 1), ("b", 1)]
    assert [r["seq"] for r in rows] == list(range(rows[0]["seq"], rows[0]["seq"] + 3))


async def test_a_group_that_cannot_commit_acknowledges_none(tmp_path: Path) -> None:
    graph = GraphServer(tmp_path / "graph").start()
    env = graph.env
    db = GraphDB.connect(env["NEO4J_URI"], env["NEO4J_USER"], env["NEO4J_PASSWORD"],
                         database=env["NEO4J_DATABASE"])
    try:
        await db.write_rows("CREATE (:User {id: 'u'})-[:MEMBER_OF {role: 'HOST'}]->"
                            "(:Room {id: 'r', seq: 0})")
        group = GroupCommit(db)
        await asyncio.to_thread(graph.stop_server)
        answers = await asyncio.gather(*(group.send(new("r", "u", f"m{i}"))
                                         for i in range(5)), return_exceptions=True)
        assert all(isinstance(a, DatabaseUnavailable) for a in answers), answers
        await asyncio.to_thread(graph.start_server)
        assert await db.read_rows("MATCH (m:Message) RETURN m.id AS id") == []
        sent = await group.send(new("r", "u", "after"))  # and it recovers
        assert sent is not None and sent.message.seq == 1
    finally:
        await db.close()
        graph.stop()


@pytest.mark.parametrize("size", [1, 3])
async def test_group_size_is_bounded(fresh: LiveServer, people: People, size: int) -> None:
    host = people.make_user("doctor")
    await register(host)
    room = (await make_room(host))["id"]
    group = GroupCommit(fresh.services.db, max_batch=size)

    async def together() -> None:
        await asyncio.gather(*(group.send(new(room, host.id, f"m{i}")) for i in range(7)))

    fresh.call(together())
    assert group.sent == 7 and group.batches == -(-7 // size)


async def test_a_group_is_held_open_for_as_many_sends_as_the_last(
        fresh: LiveServer, people: People) -> None:
    """After a group of 4, the next is held until 4 sends are in it (for at most half the last
    write's time): sends arriving just after the first one share its transaction."""
    host = people.make_user("doctor")
    await register(host)
    room = (await make_room(host))["id"]
    group = GroupCommit(fresh.services.db)

    async def run() -> tuple[list[int], list[int]]:
        await group.send(new(room, host.id, "alone"))  # a group of 1: not held
        await asyncio.gather(*(group.send(new(room, host.id, f"a{i}")) for i in range(4)))
        sizes = [group.batches]
        held = asyncio.ensure_future(group.send(new(room, host.id, "b0")))
        while room not in group._filling:  # its drain holds the group open
            await asyncio.sleep(0)
        rest = [group.send(new(room, host.id, f"b{i}")) for i in range(1, 4)]
        await asyncio.gather(held, *rest)
        sizes.append(group.batches)
        alone = group.send(new(room, host.id, "c0"))  # nobody follows: held, then written
        await alone
        sizes.append(group.batches)
        return sizes, [r["seq"] for r in await stored(fresh.services.db, room)]

    (after_a, after_b, after_c), seqs = fresh.call(run())
    assert after_a == 2  # "alone", then the 4 sent together
    assert after_b == after_a + 1  # b0..b3 in one transaction
    assert after_c == after_b + 1
    assert seqs == list(range(seqs[0], seqs[0] + 10))

"""Writers that share no lock (two service processes) posting to one room at once: their
conflicts in the database are retried, and every message is stored once, with exactly one
event whose seq is the message's, gap-free. (ArcadeDB commits each CREATE of an auto-commit
statement on its own: posting outside an explicit transaction stored some events twice.)
The end-to-end version, through two real service processes, is in test_multi_instance.py."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from graph_db import messages
from graph_db.driver import GraphDB
from graph_db.messages import NewMessage
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, make_room

SENDERS, PER_SENDER = 6, 25


async def post_concurrently(live: LiveServer, room_id: str, author_id: str
                            ) -> list[tuple[str, int, int | None]]:
    shared = live.services.db
    # Same server, separate in-process room locks: what two processes look like.
    writers = [GraphDB(shared.driver, shared.database) for _ in range(2)]

    async def sender(db: GraphDB, n: int) -> list[tuple[str, int, int | None]]:
        acked = []
        for i in range(PER_SENDER):
            sent = await messages.send_message(db, NewMessage(
                id=str(uuid.uuid4()), room_id=room_id, author_id=author_id,
                content=f"{n}.{i}", parent_id=None, root_id=None, client_message_id=None,
                mention_ids=[]))
            assert sent is not None
            acked.append((sent.message.id, sent.message.seq,
                          sent.event.seq if sent.event else None))
        return acked

    results = await asyncio.gather(*(sender(writers[n % 2], n) for n in range(SENDERS)))
    return [a for r in results for a in r]


async def test_writers_without_a_shared_lock_store_each_message_once(
        fresh: LiveServer, people: People) -> None:
    host = people.make_user("doctor")
    await register(host)
    room = (await make_room(host))["id"]
    acked = fresh.call(post_concurrently(fresh, room, host.id), timeout=120)
    assert all(message_seq == event_seq for _, message_seq, event_seq in acked), acked

    db = fresh.services.db
    events = fresh.call(db.read_rows(
        "MATCH (e:Event {roomId: $room, type: 'MessagePosted'}) "
        "RETURN e.seq AS seq, e.messageId AS id ORDER BY e.seq", room=room))
    stored = fresh.call(db.read_rows(
        "MATCH (m:Message {roomId: $room}) RETURN m.id AS id, m.seq AS seq", room=room))
    total = SENDERS * PER_SENDER
    assert len(stored) == len(acked) == total
    assert Counter(e["id"] for e in events) == Counter({m["id"]: 1 for m in stored})
    seq_of = {m["id"]: m["seq"] for m in stored}
    assert all(seq_of[e["id"]] == e["seq"] for e in events)
    assert sorted(seq_of.values()) == list(range(1, total + 1))
    assert {(i, s) for i, s, _ in acked} == set(seq_of.items())

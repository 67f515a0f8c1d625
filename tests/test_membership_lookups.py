"""One user's membership of one room, found with both ends bound (graph_db/participants.py
MEMBERSHIP), never with an end that is missing: ArcadeDB matches a pattern whose end is
bound to null as if that end were unbound, and a missing room would then have matched every
room of the user."""

from __future__ import annotations

from graph_db import messages, participants, rooms
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, make_room


async def test_a_missing_room_or_user_is_nobodys_membership(fresh: LiveServer,
                                                             people: People) -> None:
    host = people.make_user("doctor")
    busy = people.make_user("doctor")
    await register(host, busy)
    joined = [(await make_room(host, invite=[busy]))["id"] for _ in range(3)]
    outside = (await make_room(host))["id"]
    db = fresh.services.db
    keys = [(joined[0], busy.id), ("no-such-room", busy.id), (joined[1], "no-such-user"),
            (outside, busy.id), ("no-such-room", "no-such-user")]

    found = fresh.call(participants.memberships(db, keys))
    assert [m is not None for m in found] == [True, False, False, False, False]
    assert found[0] is not None and (found[0].room_id, found[0].user_id) == keys[0]

    standing = fresh.call(rooms.standings(db, keys))
    assert standing[0] is not None and standing[0].member is not None
    assert standing[1] is None and standing[2] is None and standing[4] is None
    assert standing[3] is not None and standing[3].member is None
    assert not standing[3].invited

    unread = fresh.call(messages.unread_counts(db, keys))
    assert unread == [0, 0, 0, 0, 0]

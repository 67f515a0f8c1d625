"""Nothing the service keeps per room or per user grows without bound: 10,000 rooms are
streamed in turn (subscribe, type in some, unsubscribe) over real sockets by a client process,
and afterwards every per-room and per-user map is back to its size before (bounded caches stay
within their bounds)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

from graph_db.models import now_ms
from realtime.hub import HINTS_KEPT
from resolvers.context import Services
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.personas import People, Persona
from tests.processes import ROOT

ROOMS = 10_000
SOCKETS = 8
TYPE_EVERY = 10  # typing in every tenth room (each is a mutation of its own)

# The same nodes and edges createRoom writes (graph_db/rooms.py), in one statement.
BULK_ROOMS = """
MATCH (host:User {id: $hostId})
UNWIND $ids AS id
CREATE (r:Room {id: id, name: 'bulk ' + id, description: null, type: 'CASE_DISCUSSION',
                visibility: 'PRIVATE', maxParticipants: 20, hostId: $hostId, createdAt: $now,
                updatedAt: $now, lockVersion: 0})
CREATE (host)-[:MEMBER_OF {role: 'HOST', joinedAt: $now}]->(r)
"""


def sizes(live: LiveServer) -> dict[str, int]:
    async def read() -> dict[str, int]:
        services: Services = live.services
        return {**services.hub.sizes(), "typing.throttle": services.typing.size(),
                **services.rtc.calls.sizes(), **services.rtc.router.sizes(),
                **services.inbox.sizes(),
                "db.key_locks": len(services.db._key_locks)}

    return live.call(read())


Plan = list[tuple[Persona, list[str]]]  # a socket each: who, and the rooms they stream


async def stream(live: LiveServer, plan: Plan) -> str:
    lines = "\n".join(" ".join([p.token, p.id, *rooms]) for p, rooms in plan)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.room_streamer", live.ws_url, str(TYPE_EVERY), cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(lines.encode()), 600)
    assert proc.returncode == 0, out.decode()
    return out.decode().strip()


async def settle(live: LiveServer) -> None:
    """Past the presence grace period and the typing throttle's second."""
    await asyncio.sleep(live.settings.presence_grace_seconds + 1.2)


async def test_ten_thousand_rooms_in_turn_leave_nothing_behind(fresh: LiveServer,
                                                                people: People) -> None:
    # One host per socket: a user in 10,000 rooms would measure the graph's edge lists
    # rather than the service's maps.
    hosts = [people.make_user("doctor", f"Dr Many Rooms {n}") for n in range(SOCKETS)]
    await register(*hosts)
    plan: Plan = [(h, [str(uuid.uuid4()) for _ in range(ROOMS // SOCKETS)]) for h in hosts]
    for host, rooms in plan:
        fresh.call(fresh.services.db.write_rows(BULK_ROOMS, hostId=host.id, ids=rooms,
                                                now=now_ms()))
    await stream(fresh, [(hosts[0], plan[0][1][:1])])  # warm: first-use caches
    await settle(fresh)
    before = sizes(fresh)

    report = await stream(fresh, plan)
    await settle(fresh)
    after = sizes(fresh)

    print(f"\n{report}; sizes before {before}, after {after}")
    assert after["hub.hints"] <= HINTS_KEPT
    bounded = {"hub.hints"}
    assert {k: v for k, v in after.items() if k not in bounded} == {
        k: v for k, v in before.items() if k not in bounded}

"""Two service processes sharing one graph database and one Redis: room events cross
instances in seq order, survive a Redis crash, and presence counts sockets on every instance.

Real processes throughout (tests/processes.py): the embedded ArcadeDB, a private
redis-server, and two `python -m app` services."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import neo4j
import pytest
import redis.asyncio
import websockets
from websockets.typing import Subprotocol

from realtime import cursor as event_cursor
from tests.conftest import SECRET, people_at
from tests.personas import People, Persona, make_room
from tests.processes import Cluster, Service, running_cluster

GRACE_S = 0.5
EPHEMERAL = frozenset({"PresenceChanged", "TypingChanged"})
SUB = """
subscription($room: ID!, $after: String) {
  roomEvents(roomId: $room, after: $after) {
    __typename cursor
    ... on MessagePosted { message { id seq } }
    ... on PresenceChanged { online user { id } }
  }
}"""
SEND = ("mutation($room: ID!, $content: String!) "
        "{ sendMessage(roomId: $room, input: {content: $content}) { id seq } }")
JOIN = "mutation($id: ID!) { joinRoom(id: $id) { status } }"
PARTICIPANTS = "query($id: ID!) { room(id: $id) { participants { user { id } online } } }"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET, "LOG_LEVEL": "INFO",
           "PRESENCE_GRACE_SECONDS": str(GRACE_S)}
    with running_cluster(tmp_path_factory.mktemp("multi"), env=env) as running:
        yield running


@pytest.fixture
async def people(cluster: Cluster, tmp_path: Path) -> AsyncIterator[People]:
    async with people_at(cluster.services["a"].url, tmp_path) as crowd:
        yield crowd


def on(people: People, persona: Persona, service: Service) -> Persona:
    """The same user (same token) talking to another instance."""
    return people.at(persona, service.url)


async def send(who: Persona, room_id: str, content: str) -> dict[str, Any]:
    data = await who.gql(SEND, room=room_id, content=content)
    message: dict[str, Any] = data["sendMessage"]
    return message


async def try_send(who: Persona, room_id: str, content: str) -> dict[str, Any] | None:
    """The message when the send was acknowledged (HTTP 200 with data), else None."""
    try:
        response = await who.client.post(
            "/graphql", json={"query": SEND, "variables": {"room": room_id, "content": content}},
            headers={"authorization": f"Bearer {who.token}"})
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    body = response.json()
    if body.get("errors") or not body.get("data"):
        return None
    message: dict[str, Any] = body["data"]["sendMessage"]
    return message


async def stored_events(cluster: Cluster, room_id: str, after: int) -> list[tuple[int, str, str]]:
    """(seq, type, messageId) of the room's event log, straight from the graph database."""
    assert cluster.graph is not None
    server = cluster.graph.server
    async with neo4j.AsyncGraphDatabase.driver(
            server.bolt_uri, auth=(server.user, server.password)) as driver:
        records, _, _ = await driver.execute_query(
            "MATCH (e:Event {roomId: $room}) WHERE e.seq > $after "
            "RETURN e.seq AS seq, e.type AS type, e.messageId AS messageId ORDER BY e.seq",
            room=room_id, after=after, database_=server.database)
    return [(r["seq"], r["type"], r["messageId"]) for r in records]


@dataclass(frozen=True)
class Event:
    type: str
    seq: int
    cursor: str
    message_id: str | None
    message_seq: int | None
    user_id: str | None
    online: bool | None
    at: float


class RoomSubscription:
    """One graphql-transport-ws connection with one roomEvents subscription, read in the
    background into `events`."""

    def __init__(self, ws: Any, room_id: str) -> None:
        self.ws = ws
        self.room_id = room_id
        self.events: list[Event] = []
        self.problems: list[Any] = []
        self.done = False
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, ws_url: str, token: str, room_id: str,
                   after: str | None = None) -> RoomSubscription:
        ws = await websockets.connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")],
                                      open_timeout=10, max_size=None)
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {token}"}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": SUB, "variables": {"room": room_id, "after": after}}}))
        sub = cls(ws, room_id)
        sub._reader = asyncio.create_task(sub._read())
        return sub

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                elif kind == "next" and not message["payload"].get("errors"):
                    self.events.append(self._event(message["payload"]["data"]["roomEvents"]))
                elif kind != "pong":
                    self.problems.append(message)
                self._changed.set()
        except websockets.ConnectionClosed as exc:
            self.problems.append(f"closed: {exc}")
        finally:
            self.done = True
            self._changed.set()

    def _event(self, data: dict[str, Any]) -> Event:
        message = data.get("message") or {}
        return Event(type=data["__typename"], seq=event_cursor.decode(self.room_id,
                                                                      data["cursor"]),
                     cursor=data["cursor"], message_id=message.get("id"),
                     message_seq=message.get("seq"), user_id=(data.get("user") or {}).get("id"),
                     online=data.get("online"), at=time.monotonic())

    def durable(self) -> list[Event]:
        return [e for e in self.events if e.type not in EPHEMERAL]

    @property
    def last_seq(self) -> int:
        durable = self.durable()
        return durable[-1].seq if durable else 0

    async def wait_until(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while True:
            self._changed.clear()
            if predicate():
                return
            remaining = deadline - time.monotonic()
            if self.done or remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; last seq {self.last_seq}, "
                                     f"problems {self.problems[-3:]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def reach(self, seq: int, within: float, who: str) -> None:
        await self.wait_until(lambda: self.last_seq >= seq, within, f"{who} to reach seq {seq}")

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await self._reader


def assert_gap_free(events: list[Event], first: int, last: int) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(first, last + 1)), f"not gap-free/ordered: {seqs}"
    for e in events:
        assert e.type == "MessagePosted", e
        assert e.message_seq == e.seq, e


async def public_room(people: People, host: Persona, members: list[Persona]) -> str:
    room = await make_room(host, visibility="PUBLIC", name="Cross-instance case")
    await asyncio.gather(*(m.gql(JOIN, id=room["id"]) for m in members))
    return str(room["id"])


# --- 1. ordering across instances ------------------------------------------------------------


async def test_messages_sent_through_b_reach_a_in_stored_order(
        cluster: Cluster, people: People) -> None:
    a, b = cluster.services["a"], cluster.services["b"]
    host = people.make_user("doctor")
    senders = [on(people, people.make_user("doctor"), b) for _ in range(4)]
    room_id = await public_room(people, host, senders)
    start = (await send(host, room_id, "start"))["seq"]
    sub = await RoomSubscription.open(a.ws_url, host.token, room_id,
                                      after=event_cursor.encode(room_id, start))

    async def burst(who: Persona, n: int, tag: str) -> list[dict[str, Any]]:
        return [await send(who, room_id, f"{tag} {i}") for i in range(n)]

    # 220 messages in 5 rounds, each round 4 concurrent senders through B and one through A
    # at the same time: writers in two processes collide on the room in ArcadeDB and are
    # retried within milliseconds (graph_db/driver.py), so every message is stored once.
    acked: list[dict[str, Any]] = []
    for rnd in range(5):
        batches = await asyncio.gather(burst(host, 4, f"a.{rnd}"),
                                       *(burst(s, 10, f"b{k}.{rnd}")
                                         for k, s in enumerate(senders)))
        acked += [m for batch in batches for m in batch]
    assert len(acked) == 220
    assert len({m["id"] for m in acked}) == len({m["seq"] for m in acked}) == 220
    last = max(m["seq"] for m in acked)
    try:
        await sub.wait_until(lambda: sub.last_seq >= last, 30, f"seq {last} on A")
    finally:
        await sub.close()

    received = sub.durable()
    assert_gap_free(received, start + 1, last)
    stored = await stored_events(cluster, room_id, after=start)
    assert [(e.seq, e.message_id) for e in received] == [(s, m) for s, _, m in stored]
    assert {e.message_id for e in received} == {m["id"] for m in acked}
    assert {(m["seq"], m["id"]) for m in acked} == {(e.seq, e.message_id) for e in received}


# --- 2. presence across instances ------------------------------------------------------------


async def online_in(who: Persona, room_id: str, user_id: str) -> bool:
    data = await who.gql(PARTICIPANTS, id=room_id)
    return any(p["online"] for p in data["room"]["participants"] if p["user"]["id"] == user_id)


async def test_presence_counts_sockets_on_every_instance(
        cluster: Cluster, people: People) -> None:
    a, b = cluster.services["a"], cluster.services["b"]
    host, user = people.make_user("doctor"), people.make_user("student")
    user_b = on(people, user, b)
    room_id = await public_room(people, host, [user])
    watcher = await RoomSubscription.open(a.ws_url, host.token, room_id)
    subs: list[RoomSubscription] = [watcher]

    def presence() -> list[bool | None]:
        return [e.online for e in watcher.events
                if e.type == "PresenceChanged" and e.user_id == user.id]

    try:
        await watcher.wait_until(lambda: any(e.type == "PresenceChanged"
                                             and e.user_id == host.id for e in watcher.events),
                                 10, "the watcher's own presence (subscription active)")
        on_a = await RoomSubscription.open(a.ws_url, user.token, room_id)
        subs.append(on_a)
        await watcher.wait_until(lambda: presence() == [True], 10, "user online via A")
        hello = await send(host, room_id, "hello")
        on_b = await RoomSubscription.open(b.ws_url, user.token, room_id,
                                           after=event_cursor.encode(room_id, hello["seq"]))
        subs.append(on_b)
        ping = await send(host, room_id, "ping")  # received on B: that socket is attached
        await on_b.reach(ping["seq"], 10, "the user's socket on B")
        assert await online_in(host, room_id, user.id)
        assert await online_in(user_b, room_id, user.id)

        await on_a.close()  # still connected through B
        await asyncio.sleep(GRACE_S + 1.0)
        assert presence() == [True], "went offline while a socket on B was still open"
        assert await online_in(host, room_id, user.id)
        assert await online_in(user_b, room_id, user.id)

        await on_b.close()
        await watcher.wait_until(lambda: presence() == [True, False], GRACE_S + 5,
                                 "PresenceChanged online:false after both sockets closed")
        assert not await online_in(host, room_id, user.id)
        assert not await online_in(user_b, room_id, user.id)
    finally:
        for sub in subs:
            await sub.close()


USER_ONLINE = "query($id: ID!) { user(id: $id) { online } }"


async def user_online(who: Persona, user_id: str) -> bool:
    data = await who.gql(USER_ONLINE, id=user_id)
    return bool(data["user"]["online"])


async def presence_keys(cluster: Cluster) -> dict[str, float]:
    """Every presence key in Redis and its remaining time to live (-1: none)."""
    assert cluster.redis is not None
    client = redis.asyncio.Redis.from_url(cluster.redis.url)
    try:
        keys = [k.decode() async for k in client.scan_iter("presence:*")]
        return {k: await client.ttl(k) for k in keys}
    finally:
        await client.aclose()


async def test_user_online_turns_false_on_every_instance_within_the_grace(
        cluster: Cluster, people: People) -> None:
    """User.online and Participant.online follow the user's last socket on any instance, and
    every presence key in Redis expires."""
    a, b = cluster.services["a"], cluster.services["b"]
    host, user = people.make_user("doctor"), people.make_user("student")
    host_b = on(people, host, b)
    room_id = await public_room(people, host, [user])
    other_room = await public_room(people, host, [user])
    sub = await RoomSubscription.open(a.ws_url, user.token, room_id)
    second = await RoomSubscription.open(a.ws_url, user.token, other_room)
    try:
        for s in (sub, second):
            await s.wait_until(lambda s=s: any(e.type == "PresenceChanged" for e in s.events),
                               10, "the user's own presence (attached)")
        assert await user_online(host_b, user.id)
        assert await online_in(host_b, room_id, user.id)
        ttls = await presence_keys(cluster)
        assert ttls and all(ttl > 0 for ttl in ttls.values()), ttls

        await sub.close()  # still in the other room on A: online, not in the first room
        await asyncio.sleep(GRACE_S + 1.0)
        assert await user_online(host_b, user.id)
        assert not await online_in(host_b, room_id, user.id)
        assert await online_in(host_b, other_room, user.id)

        await second.close()
        closed = time.monotonic()
        while await user_online(host_b, user.id):
            assert time.monotonic() - closed < GRACE_S + 2.0, "User.online still true on B"
            await asyncio.sleep(0.1)
        assert not await online_in(host_b, other_room, user.id)
        assert not await user_online(host, user.id)  # and on A
    finally:
        await sub.close()
        await second.close()
    left = await presence_keys(cluster)
    assert all(ttl > 0 for ttl in left.values()), left
    assert f"presence:user:{user.id}" not in left


# --- 3. Redis crash and restart --------------------------------------------------------


async def test_redis_restart_loses_no_acknowledged_message(
        cluster: Cluster, people: People) -> None:
    a, b = cluster.services["a"], cluster.services["b"]
    assert cluster.redis is not None
    redis = cluster.redis
    host, reader = people.make_user("doctor"), people.make_user("student")
    senders = [on(people, people.make_user("doctor"), b) for _ in range(3)]
    room_id = await public_room(people, host, [reader, *senders])
    start = (await send(host, room_id, "start"))["seq"]
    after = event_cursor.encode(room_id, start)
    steady = await RoomSubscription.open(a.ws_url, host.token, room_id, after=after)
    leaver = await RoomSubscription.open(a.ws_url, reader.token, room_id, after=after)

    acked: list[tuple[float, float, dict[str, Any]]] = []  # (sent at, acked at, message)
    unacked = 0
    not_ready: list[str] = []
    stop = asyncio.Event()

    async def sender(who: Persona, tag: str) -> None:
        nonlocal unacked
        i = 0
        while not stop.is_set():
            sent_at = time.monotonic()
            message = await try_send(who, room_id, f"{tag} {i}")
            i += 1
            if message is None:
                unacked += 1
            else:
                acked.append((sent_at, time.monotonic(), message))
            await asyncio.sleep(0.05)

    async def watch_ready() -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while not stop.is_set():
                for service in (a, b):
                    status: int | str
                    try:
                        status = (await client.get(f"{service.url}/readyz")).status_code
                    except httpx.HTTPError as exc:
                        status = repr(exc)
                    if status != 200:
                        not_ready.append(f"{service.name}: {status}")
                await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(sender(s, f"b{k}")) for k, s in enumerate(senders)]
    tasks.append(asyncio.create_task(watch_ready()))
    resumed: RoomSubscription | None = None
    try:
        await asyncio.sleep(1.5)
        await steady.wait_until(lambda: len(steady.durable()) >= 5, 10, "traffic before crash")
        redis.kill()
        killed_at = time.monotonic()
        await asyncio.sleep(0.4)
        # The second subscriber drops during the outage, remembering its last cursor.
        await leaver.close()
        before = leaver.durable()
        assert before, "the leaving subscriber saw nothing before the outage"
        await asyncio.sleep(0.6)
        redis.start()  # on the main thread (see processes._die_with_us); takes ~10 ms
        restarted_at = time.monotonic()
        resumed = await RoomSubscription.open(a.ws_url, reader.token, room_id,
                                              after=before[-1].cursor)
        # New traffic flows again: a message sent through B after the restart reaches A.
        await asyncio.sleep(0.2)
        after_restart = [m for sent_at, _, m in acked if sent_at > restarted_at]
        probe_deadline = time.monotonic() + 10
        while not after_restart and time.monotonic() < probe_deadline:
            await asyncio.sleep(0.05)
            after_restart = [m for sent_at, _, m in acked if sent_at > restarted_at]
        assert after_restart, "no send acknowledged after the Redis restart"
        probe = after_restart[0]
        await steady.wait_until(lambda: any(e.message_id == probe["id"] for e in steady.events),
                                5, "a post-restart message sent via B to reach A")
        flowing_after = next(e.at for e in steady.events
                             if e.message_id == probe["id"]) - restarted_at
        await asyncio.sleep(2.0)  # more traffic after the restart
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    try:
        head = max(seq for seq, _, _ in await stored_events(cluster, room_id, after=start))
        assert resumed is not None
        await steady.reach(head, 15, "the subscriber that stayed")
        await resumed.reach(head, 15, "the resumed subscriber")
    finally:
        await steady.close()
        if resumed is not None:
            await resumed.close()

    stored = await stored_events(cluster, room_id, after=start)
    stored_ids = [(s, m) for s, _, m in stored]
    acked_ids = {(m["seq"], m["id"]) for _, _, m in acked}
    during = [m for sent_at, _, m in acked if killed_at <= sent_at < restarted_at]
    assert during, "no send was acknowledged while Redis was down"
    # The subscriber that stayed connected got everything, exactly once, in order.
    assert_gap_free(steady.durable(), start + 1, head)
    assert [(e.seq, e.message_id) for e in steady.durable()] == stored_ids
    assert acked_ids <= set(stored_ids)
    # The one that left and resumed with its cursor: no gap, no duplicate at the seam.
    assert resumed is not None
    joined = before + resumed.durable()
    assert_gap_free(joined, start + 1, head)
    assert [(e.seq, e.message_id) for e in joined] == stored_ids
    assert not not_ready, not_ready
    print(f"\nredis restart: {len(acked)} acked ({len(during)} sent during the outage), "
          f"{unacked} not acked; A received a post-restart message {flowing_after:.2f} s "
          f"after the restart; resumed subscriber replayed "
          f"{len(resumed.durable())} events from seq {before[-1].seq + 1}")


async def test_outage_messages_arrive_once_redis_is_back_without_new_traffic(
        cluster: Cluster, people: People) -> None:
    """No traffic after the restart: only the hub's resync can deliver what was committed
    (and announced into the void) during the outage. A subscriber that resumes while Redis is
    down must still be attached (its presence update fails, the subscription must not)."""
    a, b = cluster.services["a"], cluster.services["b"]
    assert cluster.redis is not None
    redis = cluster.redis
    host = people.make_user("doctor")
    sender = on(people, people.make_user("doctor"), b)
    room_id = await public_room(people, host, [sender])
    first = (await send(host, room_id, "first"))["seq"]
    start = (await send(host, room_id, "start"))["seq"]
    steady = await RoomSubscription.open(a.ws_url, host.token, room_id,
                                         after=event_cursor.encode(room_id, start))
    subs = [steady]
    try:
        # Attached before the outage (the server does not acknowledge a subscribe; the
        # subscriber's own presence announcement says it is in the stream).
        await steady.wait_until(
            lambda: any(e.online and e.user_id == host.id for e in steady.events), 10,
            "the subscriber on A to attach")
        redis.kill()
        dark = [await send(sender, room_id, f"dark {i}") for i in range(5)]
        last = dark[-1]["seq"]
        # Resuming from an older cursor while Redis is down: the replay comes from the graph
        # database (up to what A's stream knows: A cannot learn of B's commits without Redis).
        resumer = await RoomSubscription.open(a.ws_url, sender.token, room_id,
                                              after=event_cursor.encode(room_id, first))
        subs.append(resumer)
        await resumer.reach(start, 5, "a replay while Redis is down")
        await asyncio.sleep(0.3)
        assert not steady.durable()
        assert resumer.last_seq == start
        redis.start()
        restarted_at = time.monotonic()
        await steady.reach(last, 10, "the subscriber on A")
        await resumer.reach(last, 10, "the subscriber that resumed during the outage")
    finally:
        for sub in subs:
            await sub.close()
    assert_gap_free(steady.durable(), start + 1, last)
    assert_gap_free(resumer.durable(), first + 1, last)
    delay = steady.durable()[0].at - restarted_at
    print(f"\nresync after the restart delivered the outage's messages in {delay:.2f} s")


async def test_subscribing_on_b_right_after_a_redis_restart(
        cluster: Cluster, people: People) -> None:
    """Pooled Redis connections from before a restart are dead. Neither a subscription on B
    (its presence update) nor an announcement from A (a live message) may be lost to that."""
    b = cluster.services["b"]
    assert cluster.redis is not None
    redis = cluster.redis
    host, member = people.make_user("doctor"), people.make_user("doctor")
    member_b = on(people, member, b)
    room_id = await public_room(people, host, [member_b])
    start = (await send(host, room_id, "start"))["seq"]
    after = event_cursor.encode(room_id, start)
    sent = [await send(member_b, room_id, f"before {i}") for i in range(3)]
    warm = await RoomSubscription.open(b.ws_url, member.token, room_id, after=after)
    await warm.reach(sent[-1]["seq"], 5, "a subscriber on B before the restart")
    await warm.close()

    redis.kill()
    await asyncio.sleep(0.3)
    redis.start()
    await asyncio.sleep(1.5)  # both services' pub/sub readers are back by now
    sub = await RoomSubscription.open(b.ws_url, member.token, room_id, after=after)
    try:
        await sub.reach(sent[-1]["seq"], 5, "the replay on B after the restart")
        live = await send(host, room_id, "live via A")
        await sub.reach(live["seq"], 5, "a live message from A on B after the restart")
        assert await online_in(host, room_id, member.id), "B's presence update was lost"
    finally:
        await sub.close()
    assert_gap_free(sub.durable(), start + 1, live["seq"])


TRAIL = """
query($actor: ID!, $action: String!) {
  auditEvents(filter: {actorId: $actor, action: $action}) { edges { node { objectId } } }
}"""


async def test_a_session_starts_once_across_instances(cluster: Cluster, people: People
                                                      ) -> None:
    """The session ledger is in Redis: a token's first use on one instance is its only
    `session.start`, wherever it is used next."""
    doctor, admin = people.make_user("doctor"), people.make_user("admin")
    elsewhere = on(people, doctor, cluster.services["b"])
    await doctor.gql("{ me { id } }")
    await elsewhere.gql("{ me { id } }")
    for who in (doctor, elsewhere):  # recorded after each instance's session check
        await make_room(who)

    async def trail(action: str) -> list[str]:
        data = await admin.gql(TRAIL, actor=doctor.id, action=action)
        return [e["node"]["objectId"] for e in data["auditEvents"]["edges"]]

    deadline = time.monotonic() + 15
    while len(await trail("mutation.createRoom")) < 2:  # both instances' batches are in
        assert time.monotonic() < deadline, "the instances did not write their trail"
        await asyncio.sleep(0.2)
    assert len(await trail("session.start")) == 1

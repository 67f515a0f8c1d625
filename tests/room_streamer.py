"""A client process for tests/test_bounded_state.py: streams many rooms in turn over several
sockets (subscribe, wait until attached, maybe type, unsubscribe), off the test process's
interpreter so that the server under test gets a core of its own.

python -m tests.room_streamer <ws url> <type every> < lines of "<token> <user id> <room id>..."
(one socket per line)"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from tests.wsclient import WSClient, connect

EVENTS = """subscription($room: ID!) {
  roomEvents(roomId: $room) { __typename ... on PresenceChanged { online user { id } } }
}"""
TYPING = "mutation($room: ID!) { setTyping(roomId: $room, typing: true) }"


async def stream_rooms(client: WSClient, user_id: str, room_ids: list[str],
                       type_every: int) -> None:
    tag = uuid.uuid4().hex[:6]  # operation ids never reused
    for n, room_id in enumerate(room_ids):
        await client.subscribe(f"r{tag}{n}", EVENTS, {"room": room_id})
        while True:  # attached once our own presence arrives
            event = await client.event(f"r{tag}{n}", timeout=10)
            if event.get("user", {}).get("id") == user_id and event.get("online"):
                break
        if n % type_every == 0:
            await client.subscribe(f"t{tag}{n}", TYPING, {"room": room_id})
            reply = await client.next_message(10, id=f"t{tag}{n}")
            assert reply["payload"] == {"data": {"setTyping": True}}, reply
        await client.complete(f"r{tag}{n}")
        client.log.clear()  # reader positions restart with it: the log stays small
        client._pos.clear()


async def main(url: str, type_every: int) -> None:
    plans = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    clients = [await connect(url, token) for token, *_ in plans]
    started = time.monotonic()
    await asyncio.gather(*(stream_rooms(client, user_id, rooms, type_every)
                           for client, (_, user_id, *rooms) in zip(clients, plans, strict=True)))
    total = sum(len(rooms) for _, _, *rooms in plans)
    print(f"{total} rooms over {len(plans)} sockets in {time.monotonic() - started:.1f} s",
          flush=True)
    for client in clients:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))

"""A client process for tests/test_bounded_state.py: streams many rooms in turn over several
sockets (subscribe, wait until attached, maybe type, unsubscribe), off the test process's
interpreter so that the server under test gets a core of its own.

python -m tests.room_streamer <ws url> <token> <user id> <sockets> <type every> < room ids"""

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


async def main(url: str, token: str, user_id: str, sockets: int, type_every: int) -> None:
    room_ids = sys.stdin.read().split()
    clients = [await connect(url, token) for _ in range(sockets)]
    started = time.monotonic()
    await asyncio.gather(*(stream_rooms(c, user_id, room_ids[k::sockets], type_every)
                           for k, c in enumerate(clients)))
    print(f"{len(room_ids)} rooms in {time.monotonic() - started:.1f} s", flush=True)
    for client in clients:
        await client.close()


if __name__ == "__main__":
    url, token, user_id, sockets, every = sys.argv[1:6]
    asyncio.run(main(url, token, user_id, int(sockets), int(every)))

"""Clients that ride out a graph database outage, for tests/test_database_outage.py: a sender
that retries each message (same clientMessageId) until it is acknowledged, and a follower that
resubscribes with its last cursor whenever its subscription or socket ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.personas import Persona
from tests.wsclient import Closed, WSClient, connect

SEND = """mutation($room: ID!, $content: String!, $cid: String!) {
  sendMessage(roomId: $room, input: {content: $content, clientMessageId: $cid}) { id seq }
}"""
FOLLOW = """subscription($room: ID!, $after: String) {
  roomEvents(roomId: $room, after: $after) {
    __typename cursor ... on MessagePosted { message { id seq } }
  }
}"""
RETRY_S = 0.1


@dataclass
class Tally:
    """What the clients were told while the database came and went."""

    codes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0


async def send_until_acked(who: Persona, room_id: str, content: str, cid: str,
                           tally: Tally) -> dict[str, Any]:
    """The acknowledged message; anything but SERVICE_UNAVAILABLE is recorded and fails the
    test later (a 500, an unexpected error, a hang)."""
    body = {"query": SEND, "variables": {"room": room_id, "content": content, "cid": cid}}
    while True:
        try:
            response = await who.client.post("/graphql", json=body, headers={
                "authorization": f"Bearer {who.token}"}, timeout=15)
        except httpx.HTTPError:
            tally.transport_errors += 1
            await asyncio.sleep(RETRY_S)
            continue
        tally.statuses[response.status_code] += 1
        payload = response.json()
        if payload.get("data") and payload["data"].get("sendMessage"):
            message: dict[str, Any] = payload["data"]["sendMessage"]
            return message
        for error in payload.get("errors") or []:
            tally.codes[error.get("extensions", {}).get("code", "?")] += 1
        await asyncio.sleep(RETRY_S)


class Follower:
    """One user following a room through every outage: each MessagePosted it receives is
    kept in order, cursor included."""

    def __init__(self, ws_url: str, who: Persona, room_id: str, after: str) -> None:
        self.ws_url, self.who, self.room_id, self.cursor = ws_url, who, room_id, after
        self.received: list[tuple[int, str]] = []  # (seq, message id)
        self.ends: Counter[str] = Counter()  # how subscriptions and sockets ended
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                client = await connect(self.ws_url, self.who.token)
            except (OSError, Closed, AssertionError) as exc:
                self.ends[f"connect: {type(exc).__name__}"] += 1
                await asyncio.sleep(RETRY_S)
                continue
            try:
                await self._follow(client)
            except Closed as closed:
                self.ends[f"closed {closed.code}"] += 1
            finally:
                with contextlib.suppress(Exception):
                    await client.close()
            await asyncio.sleep(RETRY_S)

    async def _follow(self, client: WSClient) -> None:
        """Subscriptions on one socket, each resumed from the last cursor, until it closes."""
        op = 0
        while True:
            op += 1
            await client.subscribe(f"s{op}", FOLLOW, {"room": self.room_id,
                                                      "after": self.cursor})
            while True:
                message = await client.next_message(3600, id=f"s{op}")
                if message["type"] == "complete":
                    break
                payload = message["payload"]
                if message["type"] == "error":  # no complete follows an error frame
                    self.ends[f"error {payload[0].get('extensions', {}).get('code')}"] += 1
                    break
                if payload.get("errors"):  # then complete
                    self.ends[payload["errors"][0].get("extensions", {}).get("code", "?")] += 1
                    continue
                event = payload["data"]["roomEvents"]
                if event["__typename"] == "MessagePosted":
                    self.received.append((event["message"]["seq"], event["message"]["id"]))
                    self.cursor = event["cursor"]
            await asyncio.sleep(RETRY_S)

    async def reach(self, seq: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.received or self.received[-1][0] < seq:
            assert loop.time() < deadline, (f"follower at {self.received[-1:]} of {seq}; "
                                            f"ends {dict(self.ends)}")
            await asyncio.sleep(0.05)

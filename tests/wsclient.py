"""A small graphql-transport-ws client for the tests, on the `websockets` library: connect
(with connection_init), subscribe, read messages with timeouts, and expect close codes.

Every message received is kept in `log`, in order. `next_message()` reads them one by one;
`next_message(id=...)` reads those of one operation (each reader keeps its own position)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

PROTOCOL = "graphql-transport-ws"
DURABLE = frozenset({
    "MessagePosted", "MessageEdited", "MessageDeleted", "ReactionsChanged",
    "ParticipantJoined", "ParticipantLeft", "ParticipantRoleChanged", "JoinRequested",
    "RoomUpdated", "RoomClosed",
})


class Closed(AssertionError):
    """The socket closed while a message was expected."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"socket closed with {code} ({reason!r})")
        self.code = code
        self.reason = reason


def seq_of(cursor: str) -> int:
    """The seq a room event cursor stands for (they are `ev1:<room>:<seq>`, base64)."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    return int(raw.rsplit(":", 1)[1])


def bearer(token: str) -> dict[str, Any]:
    return {"authorization": f"Bearer {token}"}


class WSClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.log: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._pos: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.resume()

    # -- connecting ----------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str, *, subprotocols: tuple[str, ...] = (PROTOCOL,),
                   origin: str | None = None, rcvbuf: int | None = None,
                   max_queue: int = 16, ssl: Any = None,
                   headers: dict[str, str] | None = None) -> WSClient:
        """A connected socket, before connection_init. `rcvbuf` shrinks the kernel's
        receive buffer (for clients that stop reading); `ssl` is the context for wss://."""
        options: dict[str, Any] = {"additional_headers": headers}
        if ssl is not None:
            options["ssl"] = ssl
        if rcvbuf is not None:
            parsed = urlparse(url)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(
                sock, (parsed.hostname, parsed.port))
            options["sock"] = sock
        ws = await ws_connect(url, subprotocols=list(subprotocols) or None,
                              origin=origin, compression=None, max_size=None,
                              max_queue=max_queue, ping_interval=None, open_timeout=10,
                              **options)
        return cls(ws)

    async def init(self, payload: dict[str, Any] | None = None, *, ack: bool = True,
                   timeout: float = 10) -> None:
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await self.send(message)
        if ack:
            reply = await self.next_message(timeout)
            assert reply["type"] == "connection_ack", reply

    # -- sending -------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def send_raw(self, text: str) -> None:
        await self.ws.send(text)

    async def subscribe(self, id: str, query: str, variables: dict[str, Any] | None = None
                        ) -> None:
        await self.send({"id": id, "type": "subscribe",
                         "payload": {"query": query, "variables": variables or {}}})

    async def complete(self, id: str) -> None:
        await self.send({"id": id, "type": "complete"})

    # -- receiving -----------------------------------------------------------------------

    def pause(self) -> None:
        """Stops reading: the library's queue, then the kernel's buffers fill up."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    def resume(self) -> None:
        if self._reader is None and self.close_code is None:
            self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.log.append(json.loads(raw))
                self._changed.set()
        except ConnectionClosed:
            pass
        self.close_code = self.ws.close_code
        self.close_reason = self.ws.close_reason or ""
        self._changed.set()

    async def _wait(self, seconds: float) -> None:
        """Until something arrives (or the socket closes), at most `seconds`."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    async def next_message(self, timeout: float = 5.0, *, id: str | None = None
                           ) -> dict[str, Any]:
        """The next message (of operation `id`); Closed if the socket closes first."""
        key = "*" if id is None else f"id:{id}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pos = self._pos.get(key, 0)
            for index in range(pos, len(self.log)):
                message = self.log[index]
                if id is None or message.get("id") == id:
                    self._pos[key] = index + 1
                    return message
            self._pos[key] = len(self.log)
            if self.close_code is not None:
                raise Closed(self.close_code, self.close_reason)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no message{'' if id is None else ' for ' + id} "
                                     f"within {timeout}s")
            await self._wait(remaining)

    async def event(self, id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next roomEvents event of operation `id` (asserts a `next` without errors)."""
        message = await self.next_message(timeout, id=id)
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        event: dict[str, Any] = message["payload"]["data"]["roomEvents"]
        return event

    async def until(self, id: str, match: Callable[[dict[str, Any]], bool],
                    timeout: float = 5.0) -> list[dict[str, Any]]:
        """Events of `id` up to and including the first that matches."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen: list[dict[str, Any]] = []
        while True:
            seen.append(await self.event(id, max(0.01, deadline - loop.time())))
            if match(seen[-1]):
                return seen

    async def durable(self, id: str, count: int, timeout: float = 10.0
                      ) -> list[dict[str, Any]]:
        """The next `count` stored events of `id`, skipping ephemeral ones (typing,
        presence)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        found: list[dict[str, Any]] = []
        while len(found) < count:
            event = await self.event(id, max(0.01, deadline - loop.time()))
            if event["__typename"] in DURABLE:
                found.append(event)
        return found

    async def error(self, id: str, timeout: float = 5.0) -> list[str]:
        """Skips events of `id` up to the errors that end it; their codes. A refused or
        failing operation ends as graphql-ws's reference server ends it: `next` with
        `data: null` and `errors`, then `complete` (asserted here)."""
        while True:
            message = await self.next_message(timeout, id=id)
            assert message["type"] == "next", message
            payload = message["payload"]
            if payload.get("errors"):
                assert payload["data"] is None, message
                assert (await self.next_message(timeout, id=id))["type"] == "complete"
                return [e.get("extensions", {}).get("code") for e in payload["errors"]]

    async def rejected(self, id: str, timeout: float = 5.0) -> list[str]:
        """The codes of the `error` frame a document that does not validate gets."""
        message = await self.next_message(timeout, id=id)
        assert message["type"] == "error", message
        return [e.get("extensions", {}).get("code") for e in message["payload"]]

    async def quiet(self, seconds: float, *, id: str | None = None) -> None:
        """Asserts that nothing new (for `id`) arrives within `seconds`, and that the socket
        stays open."""
        start = len(self.log)
        await asyncio.sleep(seconds)
        new = [m for m in self.log[start:] if id is None or m.get("id") == id]
        assert not new, f"unexpected messages {new}"
        if self.close_code is not None:
            raise Closed(self.close_code, self.close_reason)

    def pending(self, id: str | None = None) -> list[dict[str, Any]]:
        """Received but not read yet (by the `id` reader)."""
        key = "*" if id is None else f"id:{id}"
        rest = self.log[self._pos.get(key, 0):]
        return [m for m in rest if id is None or m.get("id") == id]

    async def expect_close(self, code: int | set[int], timeout: float = 5.0
                           ) -> list[dict[str, Any]]:
        """Waits for the server to close the socket with `code` (or one of a set of codes);
        the unread messages."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.close_code is None:
            remaining = deadline - loop.time()
            assert remaining > 0, f"still open after {timeout}s (expected {code})"
            await self._wait(remaining)
        codes = code if isinstance(code, set) else {code}
        assert self.close_code in codes, (self.close_code, self.close_reason)
        return self.pending()

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> WSClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(url: str, token: str | None = None, payload: dict[str, Any] | None = None,
                  **options: Any) -> WSClient:
    """An acknowledged graphql-transport-ws connection authenticated with `token` (or with
    the connection_init `payload` given)."""
    client = await WSClient.open(url, **options)
    await client.init(bearer(token) if token is not None else payload or {})
    return client

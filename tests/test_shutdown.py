"""SIGTERM drains: requests already being handled finish and are answered, every acknowledged
message is stored, sockets are closed with 1012 (service restart: clients reconnect and resume),
and the process exits 0. A real `python -m app` with its embedded database."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import SECRET, make_settings
from tests.outage import SEND
from tests.personas import People, Persona, make_room
from tests.processes import Service
from tests.rt_helpers import EVENTS, JOIN, all_messages
from tests.wsclient import connect

SENDERS = 6


async def test_sigterm_drains_then_closes_sockets_with_1012(tmp_path: Path) -> None:
    env = {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET, "LOG_LEVEL": "INFO",
           "GRAPH_DATA_DIR": str(tmp_path / "graph"), "NEO4J_URI": "", "REDIS_URL": ""}
    service = Service("drain", env, tmp_path).start()
    people = People(make_settings(tmp_path), service.url)
    try:
        service.wait_ready()
        await drain(service, people)
    finally:
        await people.aclose()
        service.stop()


async def drain(service: Service, people: People) -> None:
    host = people.make_user("doctor")
    senders = [people.make_user("doctor") for _ in range(SENDERS)]
    room = (await make_room(host, visibility="PUBLIC"))["id"]
    for who in senders:
        await who.gql(JOIN, id=room)
    sockets = [await connect(service.ws_url, who.token) for who in senders[:2]]
    for n, client in enumerate(sockets):
        await client.subscribe(f"s{n}", EVENTS, {"room": room})
    acked: list[tuple[float, str]] = []  # (when, message id)
    failed: list[str] = []
    stop = asyncio.Event()

    async def sender(who: Persona, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            variables = {"room": room, "content": f"{n}.{i}", "cid": f"{n}.{i}"}
            try:
                response = await who.client.post("/graphql", json={
                    "query": SEND, "variables": variables},
                    headers={"authorization": f"Bearer {who.token}"})
            except httpx.TransportError as exc:  # refused, or a keep-alive closed under us
                failed.append(type(exc).__name__)
                return
            assert response.status_code == 200, response.text
            body = response.json()
            assert not body.get("errors"), body
            acked.append((time.monotonic(), body["data"]["sendMessage"]["id"]))

    tasks = [asyncio.create_task(sender(who, n)) for n, who in enumerate(senders)]
    await asyncio.sleep(1.5)
    assert service.proc is not None
    service.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    for client in sockets:
        await client.expect_close(1012, timeout=20)  # "service restart": reconnect, resume
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    assert await asyncio.to_thread(service.proc.wait, 60) == 0, service.log()
    log = service.log(20_000)
    assert "Application shutdown complete" in log and "Traceback" not in log, log

    print(f"\n{len(acked)} acknowledged, {sum(t > signalled for t, _ in acked)} of them after "
          f"SIGTERM; senders ended by {failed}")
    assert len(failed) == SENDERS  # each sender stopped only when the service went away
    await check_stored(service, host, {i for _, i in acked}, room)


async def check_stored(first: Service, host: Persona, acked: set[str], room: str) -> None:
    """Started again on the same data: every acknowledged message is there."""
    env = {k: first.env[k] for k in ("ENVIRONMENT", "JWT_SECRET_KEY", "GRAPH_DATA_DIR",
                                     "NEO4J_URI", "REDIS_URL")}
    again = Service("again", env, first.log_path.parent).start()
    try:
        again.wait_ready()
        async with httpx.AsyncClient(base_url=again.url, timeout=30) as client:
            reader = dataclasses.replace(host, client=client)
            stored = {m["id"] for m in await all_messages(reader, room)}
        assert acked <= stored, f"{len(acked - stored)} acknowledged messages lost"
    finally:
        again.stop()

"""The load generator: N WebSocket subscribers and a publisher in one process (run it pinned to
its own core, `taskset -c 1 python -m bench.loadgen ...`). Prints one JSON line of results.

Message contents carry `bench|<phase>|<i>|<send µs>|` (CLOCK_MONOTONIC of this process), read
back by every subscriber (bench.wsclient). Its own CPU use is reported, so a saturated
generator shows.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import gcpause
from bench.wsclient import T0, Http, Stats, WSClient, pct

PAD = 10  # content ~35 characters: our `next` frame with the 5-field selection is ~250 bytes
SUBSCRIPTION = (
    "subscription($room: ID!) { roomEvents(roomId: $room) { ... on MessagePosted {"
    " message { id content seq createdAt author { displayName } } } } }")
SEND = ("mutation($r: ID!, $c: String!) {"
        " sendMessage(roomId: $r, input: {content: $c}) { id } }")
QUIET_S = 0.5  # no frame for this long: the server has nothing more in flight
CLK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def content(tag: str, i: int, ns: int) -> str:
    return f"bench|{tag}|{i}|{(ns - T0) // 1000}|" + "x" * PAD


def raw_frame(text: str, i: int) -> bytes:
    """What the raw server broadcasts: shaped like our `next` frame."""
    message = {"id": str(uuid.uuid4()), "content": text, "seq": i,
               "createdAt": datetime.now(UTC).isoformat(),
               "author": {"displayName": "Bench Host"}}
    return orjson.dumps({"id": "1", "type": "next",
                         "payload": {"data": {"roomEvents": {"message": message}}}})


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def children_cpu_s(pid: int) -> float:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    return sum(cpu_s(int(k)) for k in kids)


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ours = args.kind == "ours"
        self.stats = Stats()
        self.clients: list[WSClient] = []
        setup: dict[str, Any] = orjson.loads(Path(args.setup).read_bytes()) if self.ours else {}
        self.room: str = setup.get("room", "")
        self.tokens: list[str] = setup.get("tokens", [])
        self.auth = f"Authorization: Bearer {setup['host_token']}\r\n" if self.ours else ""
        self.metrics_token: str | None = setup.get("metrics_token")
        self.pool: asyncio.Queue[Http] = asyncio.Queue()
        for _ in range(args.concurrency):
            self.pool.put_nowait(Http(args.host, args.port))

    # -- subscribers ---------------------------------------------------------------------

    def _request(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        path, proto = ("/graphql", "Sec-WebSocket-Protocol: graphql-transport-ws\r\n") \
            if self.ours else ("/ws", "")
        return (f"GET {path} HTTP/1.1\r\nHost: {self.args.host}:{self.args.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n{proto}\r\n").encode()

    async def _open_one(self, i: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            loop = asyncio.get_running_loop()
            _, client = await loop.create_connection(
                lambda: WSClient(self.stats, self._request()), self.args.host, self.args.port)
            self.clients.append(client)
            await asyncio.wait_for(client.upgraded, 30)
            if not self.ours:
                return
            token = self.tokens[i % len(self.tokens)]  # users beyond the cap: more sockets
            client.send_text(orjson.dumps({"type": "connection_init", "payload": {
                "authorization": f"Bearer {token}"}}).decode())
            await asyncio.wait_for(client.acked, 30)
            client.send_text(orjson.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": SUBSCRIPTION, "variables": {"room": self.room}}}).decode())

    async def open_all(self, count: int) -> int:
        gate = asyncio.Semaphore(self.args.connect_concurrency)
        results = await asyncio.wait_for(asyncio.gather(
            *(self._open_one(i, gate) for i in range(count)), return_exceptions=True),
            self.args.timeout)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            self.stats.first_error = self.stats.first_error or repr(failed[0])
        return len(results) - len(failed)

    async def wait_ready(self, count: int, limit: float) -> None:
        """Publishes warm-up messages until `count` subscribers have received one: their
        subscriptions are live, and the server has worked off everything queued before."""
        st, deadline, i = self.stats, time.monotonic() + limit, 0
        while st.ready < count and time.monotonic() < deadline:
            await self._post("w", i, time.monotonic_ns())
            i += 1
            sent = time.monotonic()
            await self._until(lambda sent=sent: st.ready >= count or (  # type: ignore[misc]
                time.monotonic() - max(sent, st.last_frame / 1e9) > QUIET_S), deadline)

    def close_all(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()
        self.clients = []

    async def prewarm(self, count: int) -> None:
        """A few subscriptions opened, served and closed, so that one-time allocations of a
        fresh server (lazy imports, caches) do not count as per-subscription memory."""
        await self.open_all(count)
        await self.wait_ready(count, 60)
        self.close_all()
        self.stats.ready = 0
        await asyncio.sleep(1.0)

    @staticmethod
    async def _until(done: Callable[[], bool], deadline: float) -> None:
        while not done() and time.monotonic() < deadline:  # noqa: ASYNC110 (polls counters)
            await asyncio.sleep(0.02)

    # -- publishing ----------------------------------------------------------------------

    def _body(self, tag: str, i: int, ns: int) -> tuple[str, bytes]:
        text = content(tag, i, ns)
        if self.ours:
            return "/graphql", orjson.dumps({"query": SEND,
                                             "variables": {"r": self.room, "c": text}})
        return "/publish", raw_frame(text, i)

    async def _post(self, tag: str, i: int, ns: int, conn: Http | None = None) -> None:
        http = conn or await self.pool.get()
        try:
            status, body = await http.post(*self._body(tag, i, ns), headers=self.auth)
            self.stats.rtt.append(time.monotonic_ns() - ns)
            if status != 200 or b'"errors"' in body:
                raise RuntimeError(f"publish failed: {status} {body[:300]!r}")
        except Exception as exc:
            self.stats.errors += 1
            self.stats.first_error = self.stats.first_error or repr(exc)
        finally:
            self.pool.put_nowait(http)

    def _server_cpu(self) -> tuple[float, float]:
        pid, db = self.args.pid, self.args.db_pid
        return cpu_s(pid), children_cpu_s(pid) + (cpu_s(db) if db else 0.0)

    async def phase(self, tag: str, count: int, rate: float, limit: float) -> dict[str, Any]:
        """Publishes up to `count` messages at `rate`/s for at most `limit` s (at most
        `concurrency` in flight) and waits until every subscriber has them (or the stream
        went quiet)."""
        st, n = self.stats, self.args.n
        st.reset(tag)
        spy = await self._profile(limit) if tag == "t" and self.args.profile else None
        cpu0, (srv0, db0) = time.process_time(), self._server_cpu()
        tasks: set[asyncio.Task[None]] = set()
        t0, first, sent = time.monotonic(), 0, 0
        for i in range(count):
            if time.monotonic() - t0 > limit:
                break
            sent += 1
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = await self.pool.get()
            ns = time.monotonic_ns()
            first = first or ns
            task = asyncio.create_task(self._post(tag, i, ns, conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        published = time.monotonic() - t0
        if tasks:
            await asyncio.wait(set(tasks), timeout=60)
        deadline = time.monotonic() + self.args.timeout
        await self._until(lambda: st.count >= n * sent or (
            time.monotonic() - st.last_frame / 1e9 > max(2.0, 20 * QUIET_S)), deadline)
        wall = (st.last - first) / 1e9 if st.last else 0.0
        span = max(wall, 1e-9)
        srv1, db1 = self._server_cpu()
        if spy is not None:
            await asyncio.wait_for(spy.wait(), limit + 60)
        lat, rtt = sorted(st.lat), sorted(st.rtt)
        return {
            "messages": sent, "rate": rate, "frame_bytes": st.size, "expected": n * sent,
            "deliveries": st.count,
            "deliveries_per_s": round(st.count / span), "p50_ms": pct(lat, 0.50),
            "p99_ms": pct(lat, 0.99), "max_ms": pct(lat, 1.0), "duration_s": round(wall, 3),
            "publish_s": round(published, 3), "publish_rtt_p50_ms": pct(rtt, 0.5),
            "loadgen_cpu": round((time.process_time() - cpu0) / span, 3),
            "server_cpu": round((srv1 - srv0) / span, 3),
            "db_cpu": round((db1 - db0) / span, 3),
            "deliveries_per_server_cpu_s": round(st.count / max(srv1 - srv0, 1e-9)),
        }

    async def _gc_scrape(self) -> gcpause.Scrape | str | None:
        """Ours' GC pause figures (bench.gcpause); what went wrong instead; raw has none."""
        if not self.ours:
            return None
        try:
            return await gcpause.scrape(self.args.host, self.args.port, self.metrics_token)
        except Exception as exc:
            return repr(exc)[:200]

    async def _profile(self, limit: float) -> asyncio.subprocess.Process | None:
        """py-spy records the server (not pausing it) for the throughput phase."""
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) \
            or shutil.which("py-spy")
        if exe is None:
            self.stats.first_error = self.stats.first_error or "py-spy not installed"
            return None
        return await asyncio.create_subprocess_exec(
            exe, "record", "-p", str(self.args.pid), "-o", self.args.profile, "-f",
            "speedscope", "-r", "100", "-d", str(int(limit) + 5), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def run(self) -> dict[str, Any]:
        args, st = self.args, self.stats
        if args.prewarm:
            await self.prewarm(min(args.prewarm, args.n))
        frames0, rss0 = st.frames, rss_kb(args.pid)
        t0 = time.monotonic()
        connected = await self.open_all(args.n)
        await self.wait_ready(args.n, args.timeout)
        ready_s = time.monotonic() - t0
        await asyncio.sleep(1.0)
        rss1 = rss_kb(args.pid)
        result: dict[str, Any] = {
            "kind": args.kind, "n": args.n, "connected": connected, "ready": st.ready,
            "ready_s": round(ready_s, 2), "frames_before_ready": st.frames - frames0,
            "rss_before_kb": rss0, "rss_after_kb": rss1,
            "kb_per_sub": round((rss1 - rss0) / max(1, args.n), 2),
        }
        if st.ready == args.n:
            result["latency"] = await self.phase("l", args.lat_messages, args.lat_rate,
                                                 args.phase_limit)
            gc0 = await self._gc_scrape()
            result["throughput"] = await self.phase("t", args.tput_messages, args.tput_rate,
                                                    args.phase_limit)
            gc1 = await self._gc_scrape()
            if isinstance(gc0, gcpause.Scrape) and isinstance(gc1, gcpause.Scrape):
                result["throughput"]["gc"] = gcpause.during(gc0, gc1)
            elif self.ours:
                result["throughput"]["gc"] = {"error": gc0 if isinstance(gc0, str) else gc1}
        result["errors"], result["first_error"] = st.errors, st.first_error
        self.close_all()
        await asyncio.sleep(0.5)
        return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--kind", choices=["raw", "ours"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server process (for RSS, CPU)")
    p.add_argument("--n", type=int, required=True, help="subscribers")
    p.add_argument("--db-pid", type=int, default=0, help="the graph database (CPU only)")
    p.add_argument("--setup", help="JSON with room, host_token, tokens (ours)")
    p.add_argument("--lat-messages", type=int, default=50)
    p.add_argument("--lat-rate", type=float, default=20.0, help="messages/s, latency phase")
    p.add_argument("--tput-messages", type=int, default=200)
    p.add_argument("--tput-rate", type=float, default=300.0, help="messages/s, throughput")
    p.add_argument("--concurrency", type=int, default=8, help="publishes in flight")
    p.add_argument("--prewarm", type=int, default=10,
                   help="subscriptions opened and closed before the memory baseline")
    p.add_argument("--connect-concurrency", type=int, default=100)
    p.add_argument("--profile", help="py-spy speedscope output for the throughput phase")
    p.add_argument("--phase-limit", type=float, default=10.0, help="publishing time bound, s")
    p.add_argument("--timeout", type=float, default=240.0, help="bound of each wait, s")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        p.error("loopback addresses only")
    return args


def run_and_print(go: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """A load generator's run on uvloop (when installed), its result as one JSON line."""
    raise_nofile()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(go())
    else:
        result = uvloop.run(go())
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_and_print(lambda: LoadGen(args).run())


if __name__ == "__main__":
    main()

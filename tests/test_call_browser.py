"""A real browser in a call with an aiortc peer, signalling only through the service.

The system's Chromium (driven by playwright, as tests/test_graphiql_browser.py does) loads
tests/call_page/ from a loopback origin, speaks graphql-transport-ws itself for
webrtcSignals, and sends its signals, joinCall, startScreenShare and reportCallStats with
fetch. The other participant is an aiortc peer in this process, on a SignalSocket. The
browser offers, aiortc answers; then the browser applies the screen-share quality the
service hands out (RTCRtpSender.setParameters, which aiortc cannot do:
../shared/notes/calls.md §2d) and aiortc measures what arrives."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import threading
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from aiortc.stats import RTCTransportStats
from av import VideoFrame
from playwright.async_api import BrowserContext, Page

from graph_db.embedded import find_free_port
from tests import browser
from tests.call_helpers import SignalSocket, join
from tests.conftest import make_settings
from tests.gql_helpers import register
from tests.harness import LiveServer
from tests.media import patch_loopback
from tests.personas import People, Persona, make_room

PAGE_DIR = Path(__file__).parent / "call_page"
# getUserMedia answers with Chromium's generated camera, without a prompt.
FAKE_MEDIA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
START_KBPS = 2_000  # enough for 1280x720 from the first frames
SETTLE, WINDOW = 2.0, 3.0  # seconds: let the encoder adapt, then count frames


@pytest.fixture(scope="module")
def page_port() -> int:
    """Chosen before the service starts: its CORS_ORIGINS must name the page's origin."""
    return find_free_port()


@pytest.fixture(scope="module")
def page_origin(page_port: int) -> Iterator[str]:
    """tests/call_page over HTTP on loopback: getUserMedia needs a secure context, which
    http://127.0.0.1 is (about:blank is not)."""
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(PAGE_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", page_port), handler)
    thread = threading.Thread(target=server.serve_forever, name="call-page", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{page_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def call_live(tmp_path_factory: pytest.TempPathFactory, page_origin: str
              ) -> Iterator[LiveServer]:
    # No STUN or TURN: both peers are on this machine, host candidates reach each other.
    settings = make_settings(tmp_path_factory.mktemp("call-browser"), stun_servers=[],
                             cors_origins=[page_origin])
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with browser.chromium(tmp_path / "profile", *FAKE_MEDIA) as context:
        yield context


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiortc's only host candidate is 127.0.0.1 (aioice leaves it out by itself).
    Chromium does not gather on loopback: its candidates are eth0's (here 192.0.2.2 and
    fd00::2, real addresses rather than mDNS names, since the page holds the camera).
    Measured: the pair 192.0.2.2 <-> 127.0.0.1 connects, both being this machine's own
    addresses (the kernel delivers over lo). aiortc offering eth0's address works too; the
    loopback patch is what the other call tests use, and needs no address of this host."""
    patch_loopback(monkeypatch)


def start_fast(sdp: str) -> str:
    """The answer with `x-google-start-bitrate` on VP8, which Chromium's sender reads from
    the remote description. Without it the browser starts at 300 kbps and, following
    aiortc's slowly rising REMB (about +30 kbps/s here), sends 640x360 for the first ~10 s:
    the "before" measurement would already look capped."""
    return re.sub(r"(a=rtpmap:(\d+) VP8/90000\r\n)",
                  rf"\1a=fmtp:\2 x-google-start-bitrate={START_KBPS}\r\n", sdp)


# -- the aiortc participant -----------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    fps: float
    size: tuple[int, int]  # the largest frame (width, height)
    kbps: float

    def __str__(self) -> str:
        return f"{self.size[0]}x{self.size[1]} at {self.fps:.1f} fps, {self.kbps:.0f} kbps"


@dataclass
class Receiver:
    """The aiortc side: answers the browser's offer and keeps every frame's arrival."""

    pc: RTCPeerConnection
    socket: SignalSocket
    frames: list[tuple[float, int, int]] = field(default_factory=list)  # (time, w, h)
    candidates: list[str] = field(default_factory=list)  # trickled by the browser
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.pc.on("track", self._on_track)
        self.tasks.append(asyncio.create_task(self._pump()))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self.tasks.append(asyncio.create_task(self._watch(track)))

    async def _watch(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, VideoFrame)
                self.frames.append((loop.time(), frame.width, frame.height))

    async def _pump(self) -> None:
        """Handles the browser's signals in order, for as long as the test runs."""
        while True:
            signal = await self.socket.receive(timeout=3600)
            if signal["kind"] == "OFFER":
                await self._answer(signal)
            elif signal["kind"] == "ICE_CANDIDATE":
                await self._add_candidate(signal["candidate"])

    async def _answer(self, offer: dict[str, Any]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        # aiortc gathers before setLocalDescription returns: its candidates are in the SDP.
        body = await self.socket.send(offer["from"]["id"], "ANSWER",
                                      sdp=start_fast(self.pc.localDescription.sdp))
        assert body == {"data": {"sendWebrtcSignal": True}}, body

    async def _add_candidate(self, data: dict[str, Any]) -> None:
        line: str = data["candidate"]
        self.candidates.append(line)
        candidate = candidate_from_sdp(line.split(":", 1)[1])  # after "candidate:"
        candidate.sdpMid = data.get("sdpMid")
        candidate.sdpMLineIndex = data.get("sdpMLineIndex")
        await self.pc.addIceCandidate(candidate)

    async def measure(self) -> Sample:
        """What arrived over WINDOW seconds, after SETTLE seconds for the sender to adapt."""
        await asyncio.sleep(SETTLE)
        begin, received = asyncio.get_running_loop().time(), await self.bytes_received()
        await asyncio.sleep(WINDOW)
        kbps = (await self.bytes_received() - received) * 8 / 1000 / WINDOW
        window = [(w, h) for t, w, h in self.frames if t >= begin]
        assert window, f"no frames in {WINDOW}s"
        return Sample(len(window) / WINDOW, max(window), kbps)

    async def bytes_received(self) -> int:
        """Over the (bundled) transport: video, a little RTCP."""
        report = await self.pc.getStats()
        return sum(s.bytesReceived for s in report.values() if isinstance(s, RTCTransportStats))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pc.close()
        await self.socket.close()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    """Polls the (async) `check` until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"not {what} within {timeout}s"
        await asyncio.sleep(0.1)


async def signals_attached(live: LiveServer, room_id: str, user_id: str) -> bool:
    """Whether a webrtcSignals subscription of `user_id` follows the room (there is no
    subscribe acknowledgement in graphql-transport-ws)."""
    async def keys() -> list[tuple[str, str]]:
        return live.services.rtc.router.local_keys()

    return (room_id, user_id) in await asyncio.to_thread(live.call, keys())


# -- the browser participant ----------------------------------------------------------------

async def open_page(context: BrowserContext, origin: str, live: LiveServer, who: Persona,
                    room_id: str) -> Page:
    page = await context.new_page()
    query = urllib.parse.urlencode({"service": live.url, "token": who.token, "room": room_id})
    response = await page.goto(f"{origin}/index.html?{query}", wait_until="load")
    assert response is not None and response.status == 200
    settings = await page.evaluate("window.call.start()")
    assert (settings["width"], settings["height"]) == (1280, 720), settings
    await until(lambda: signals_attached(live, room_id, who.id), "subscribed")
    return page


async def browser_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("window.call.state()")
    return state


# -- the test -------------------------------------------------------------------------------

async def test_browser_and_aiortc_call_through_the_service_and_the_share_cap_applies(
        call_live: LiveServer, page_origin: str, chromium: BrowserContext,
        loopback: None) -> None:
    async with contextlib.aclosing(People(call_live.settings, call_live.url)) as people:
        host, guest = people.make_user("doctor"), people.make_user("doctor")
        await register(host, guest)
        room_id = (await make_room(host, invite=[guest]))["id"]
        peer = Receiver(RTCPeerConnection(), await SignalSocket.open(
            call_live.ws_url, guest, room_id))
        try:
            await call_with_a_browser(call_live, page_origin, chromium, (host, guest),
                                      room_id, peer)
        finally:
            await peer.close()


async def call_with_a_browser(live: LiveServer, origin: str, context: BrowserContext,
                              people: tuple[Persona, Persona], room_id: str,
                              peer: Receiver) -> None:
    host, guest = people
    peer.socket.session_id = (await join(guest, room_id))["sessionId"]
    peer.start()
    page = await open_page(context, origin, live, host, room_id)
    session = await page.evaluate("window.call.join()")
    assert [p["user"]["id"] for p in session["peers"]] == [guest.id]
    await page.evaluate("(id) => window.call.offerTo(id)", guest.id)

    async def connected() -> bool:
        state = await browser_state(page)
        assert not state["errors"], state
        return bool(peer.pc.connectionState == "connected"
                    and state["connectionState"] == "connected")

    await until(connected, "connected on both sides")
    state = await browser_state(page)
    assert state["signalsIn"] == ["ANSWER"]  # aiortc does not trickle
    assert peer.candidates, "the browser trickled no candidate"

    await share_and_measure(page, peer)

    reported = await page.evaluate("window.call.report()")
    assert reported["body"] == {"data": {"reportCallStats": True}}, reported
    assert reported["input"]["connected"] is True
    assert reported["input"]["localCandidateType"] == "host", reported
    assert reported["pair"]["remote"].startswith("127.0.0.1:"), reported  # aiortc's
    print(f"selected pair {reported['pair']}")
    assert (await browser_state(page))["errors"] == []


async def share_and_measure(page: Page, peer: Receiver) -> None:
    """The browser takes the screen share at H360FPS15 and caps its sender; aiortc sees
    the difference."""
    before = await peer.measure()
    shared = await page.evaluate("window.call.share('H360FPS15')")
    assert shared["screenShare"]["quality"] == {
        "width": 640, "height": 360, "frameRate": 15, "maxBitrateKbps": 400,
        "preset": "H360FPS15"}
    encoding = shared["encoding"]
    assert (encoding["scaleResolutionDownBy"], encoding["maxFramerate"],
            encoding["maxBitrate"]) == (2, 15, 400_000), encoding
    after = await peer.measure()
    print(f"before: {before}; after: {after}; browser candidates {peer.candidates}")
    # Chromium's fake camera: 1280x720 at 20 fps (measured), so both caps show. On a loaded
    # machine the uncapped stream's rate may sag (decoding 720p in Python): the resolution
    # alone proves the cap was not there before.
    assert before.size[0] > 640 and before.size[1] > 360, before
    assert before.fps > 5, before
    assert after.size[0] <= 640 and after.size[1] <= 360, after
    assert after.fps <= 15 + 2, after  # a window may catch a frame or two more
    # Bitrate only roughly (an encoder overshoots, RTCP counts too; notes §2d).
    assert after.kbps <= 400 * 1.5, after

"""A call participant for tests with real aiortc peers that signal only through the service:
the `sendWebrtcSignal` mutation and a `webrtcSignals` subscription over graphql-transport-ws
(tests/call_helpers.py), following the client flow of docs/calls.md: subscribe, `joinCall`,
send an OFFER to everyone `joinCall.peers` names, answer the OFFERs others send, and report
how each connection went (`reportCallStats`). aiortc puts every candidate in its SDP (no
trickle), so no ICE_CANDIDATE is ever sent.

Also `CapTrack`, the sender-side quality cap a browser applies with `setParameters`, which
aiortc lacks (../shared/notes/calls.md §2d): downscaling and dropping frames is what a
receiver can measure exactly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from tests.call_helpers import STATS, SignalSocket, join
from tests.harness import LiveServer
from tests.personas import Persona
from tests.wsclient import Closed

CONNECT_TIMEOUT = 10.0
Tracks = Callable[[], list[MediaStreamTrack]]
# From the joinCall response (its rtcConfiguration) to the configuration of each new PC.
ConfigOf = Callable[[dict[str, Any]], RTCConfiguration]
Frame = tuple[float, int, int]  # loop time of arrival, width, height (audio: 0, 0)


def no_tracks() -> list[MediaStreamTrack]:
    return []


def loopback(session: dict[str, Any]) -> RTCConfiguration:
    """No ICE server at all: host candidates on loopback are enough, and None would make aiortc
    add Google's STUN server."""
    return RTCConfiguration(iceServers=[])


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether `predicate` came true within `timeout` (polled: aiortc's state changes are
    plain callbacks)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def selected_pair(pc: RTCPeerConnection) -> tuple[str, str]:
    """Types of the (local, remote) candidates ICE nominated. aiortc 1.16 has neither
    getSelectedCandidatePair nor candidate-pair stats: this reads aioice's nominated pair
    behind the data channel (SCTP -> DTLS -> ICE -> aioice.Connection), component 1 (RTP and
    RTCP are muxed)."""
    assert pc.sctp is not None
    pair = pc.sctp.transport.transport._connection._nominated[1]
    return pair.local_candidate.type, pair.remote_candidate.type


class Sink:
    """Reads one received track to its end, noting each frame's arrival and size: aiortc's
    receiver queues decoded frames until somebody reads them."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.kind = track.kind
        self.frames: list[Frame] = []
        self._track = track
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(MediaStreamError):  # the track ended (its PC closed)
            while True:
                frame = await self._track.recv()
                size = (frame.width, frame.height) if isinstance(frame, VideoFrame) else (0, 0)
                self.frames.append((loop.time(), *size))

    def since(self, start: float) -> list[Frame]:
        return [frame for frame in self.frames if frame[0] > start]

    async def measure(self, seconds: float, size: tuple[int, int] | None = None,
                      timeout: float = CONNECT_TIMEOUT) -> tuple[float, set[tuple[int, int]]]:
        """(frames per second, sizes seen) over `seconds` after the first frame (of `size`):
        frames in flight from before a quality change are not counted."""
        def arrived() -> bool:
            return any(size is None or (w, h) == size for _, w, h in self.frames)

        assert await wait_until(arrived, timeout), f"no {self.kind} frame of {size}"
        start = next(t for t, w, h in self.frames if size is None or (w, h) == size)
        await asyncio.sleep(seconds)
        window = [f for f in self.since(start) if f[0] <= start + seconds]
        return len(window) / seconds, {(w, h) for _, w, h in window}

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Link:
    """The peer connection with one remote user, its data channel and what it received."""

    def __init__(self, pc: RTCPeerConnection, session_id: str) -> None:
        self.pc = pc
        self.session_id = session_id  # the remote's call session
        self.channel: RTCDataChannel | None = None
        self.sinks: dict[str, Sink] = {}  # by kind
        self.answered = asyncio.Event()  # both descriptions applied on this side
        self._pongs: dict[str, asyncio.Future[str]] = {}
        self._pings = itertools.count(1)

    def attach(self, channel: RTCDataChannel) -> None:
        """Either end may ping: "ping N" is echoed as "pong N"."""
        self.channel = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            text = message.decode() if isinstance(message, bytes) else message
            verb, _, number = text.partition(" ")
            if verb == "ping":
                channel.send(f"pong {number}")
            elif verb == "pong" and number in self._pongs:
                self._pongs.pop(number).set_result(text)

    async def ping(self) -> str:
        assert await wait_until(lambda: self.channel is not None
                                and self.channel.readyState == "open", CONNECT_TIMEOUT)
        assert self.channel is not None
        number = str(next(self._pings))
        answer = self._pongs[number] = asyncio.get_running_loop().create_future()
        self.channel.send(f"ping {number}")
        return await asyncio.wait_for(answer, CONNECT_TIMEOUT)

    async def close(self) -> None:
        await self.pc.close()
        for sink in self.sinks.values():
            await sink.close()


class CallPeer:
    """One persona in one room's call: a signal socket, one RTCPeerConnection per remote
    user, and a task that consumes the signals addressed to them (OFFER: answer, ANSWER:
    apply, HANGUP: close that connection)."""

    def __init__(self, live: LiveServer, who: Persona, room_id: str, *,
                 config: ConfigOf = loopback, tracks: Tracks = no_tracks) -> None:
        self.live, self.who, self.room_id = live, who, room_id
        self.config = config
        self.tracks = tracks  # called once per connection: a track feeds one sender only
        self.links: dict[str, Link] = {}
        self.signals: list[dict[str, Any]] = []  # every signal received, in order
        self.session: dict[str, Any] = {}
        self.socket: SignalSocket | None = None
        self._consumer: asyncio.Task[None] | None = None

    @property
    def session_id(self) -> str:
        return str(self.session["sessionId"])

    async def join(self, *, audio: bool = True, video: bool = True) -> dict[str, Any]:
        """Subscribes first (OFFERs may come as soon as the others see us), then joins."""
        self.socket = await SignalSocket.open(self.live.ws_url, self.who, self.room_id)
        await self._attached()
        self.session = await join(self.who, self.room_id, audio=audio, video=video)
        self.socket.session_id = self.session_id
        self._consumer = asyncio.create_task(self._consume())
        return self.session

    async def _attached(self) -> None:
        """Until the service follows our signal channel: signals are never stored, so one
        published before would be lost. Asked on the service's own loop, where the router
        lives (with the in-memory pub/sub, subscribing completes in the same step)."""
        key = (self.room_id, self.who.id)

        async def keys() -> list[tuple[str, str]]:
            return self.live.services.rtc.router.local_keys()

        for _ in range(250):
            future = asyncio.run_coroutine_threadsafe(keys(), self.live.loop)
            if key in await asyncio.wrap_future(future):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"webrtcSignals of {self.who.id} never attached")

    async def call_peers(self) -> None:
        """The joiner's part: an OFFER to everyone already in the call."""
        await asyncio.gather(*(self.offer(peer["user"]["id"], peer["sessionId"])
                               for peer in self.session["peers"]))

    async def offer(self, user_id: str, session_id: str) -> Link:
        link = self._link(user_id, session_id)
        link.attach(link.pc.createDataChannel("chat"))
        for track in self.tracks():
            link.pc.addTrack(track)
        # Returns once ICE gathering is complete: every candidate is in the SDP.
        await link.pc.setLocalDescription(await link.pc.createOffer())
        await self.send(user_id, "OFFER", link.pc.localDescription.sdp)
        return link

    async def send(self, user_id: str, kind: str, sdp: str | None = None) -> None:
        assert self.socket is not None
        body = await self.socket.send(user_id, kind, sdp=sdp)
        assert body == {"data": {"sendWebrtcSignal": True}}, body

    def _link(self, user_id: str, session_id: str) -> Link:
        link = Link(RTCPeerConnection(self.config(self.session["rtcConfiguration"])),
                    session_id)
        self.links[user_id] = link
        link.pc.on("datachannel", link.attach)

        @link.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            link.sinks[track.kind] = Sink(track)

        return link

    async def _consume(self) -> None:
        assert self.socket is not None
        while True:
            try:
                signal = await self.socket.receive(timeout=3600)
            except Closed:
                return
            self.signals.append(signal)
            await self._handle(signal["from"]["id"], signal)

    async def _handle(self, user_id: str, signal: dict[str, Any]) -> None:
        link = self.links.get(user_id)
        if signal["kind"] == "OFFER":
            if link is not None:  # a new connection replaces the old one
                await link.close()
            await self._answer(user_id, signal)
        elif signal["kind"] == "ANSWER":
            assert link is not None, f"an ANSWER from {user_id} without an OFFER"
            await link.pc.setRemoteDescription(
                RTCSessionDescription(sdp=signal["sdp"], type="answer"))
            link.answered.set()
        elif signal["kind"] == "HANGUP" and link is not None:
            await link.close()

    async def _answer(self, user_id: str, offer: dict[str, Any]) -> None:
        link = self._link(user_id, offer["sessionId"])
        await link.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        for track in self.tracks():  # reuses the offered transceivers of the same kind
            link.pc.addTrack(track)
        await link.pc.setLocalDescription(await link.pc.createAnswer())
        await self.send(user_id, "ANSWER", link.pc.localDescription.sdp)
        link.answered.set()

    async def link(self, user_id: str) -> Link:
        """The connection with `user_id` once both descriptions are applied (the joiner's
        OFFER and the answer went through the service)."""
        assert await wait_until(lambda: user_id in self.links or self._failed(),
                                CONNECT_TIMEOUT), f"{self.who.id}: no OFFER from {user_id}"
        self._raise_failure()
        link = self.links[user_id]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(link.answered.wait(), CONNECT_TIMEOUT)
        self._raise_failure()
        assert link.answered.is_set(), f"{self.who.id}: no ANSWER from {user_id}"
        return link

    async def settle(self, user_id: str, timeout: float = CONNECT_TIMEOUT,
                     **extra: Any) -> bool:
        """Waits (at most `timeout`, our own: with no candidate aiortc stays "new" forever)
        for the connection with `user_id`, and reports the outcome to the service."""
        link = await self.link(user_id)
        await wait_until(lambda: link.pc.connectionState in ("connected", "failed", "closed"),
                         timeout)
        connected = link.pc.connectionState == "connected"
        local, remote = selected_pair(link.pc) if connected else (None, None)
        report = {"roomId": self.room_id, "sessionId": self.session_id,
                  "connected": connected, "localCandidateType": local,
                  "remoteCandidateType": remote, **extra}
        assert (await self.who.gql(STATS, input=report))["reportCallStats"] is True
        return connected

    def _failed(self) -> bool:
        return self._consumer is not None and self._consumer.done()

    def _raise_failure(self) -> None:
        """A signal the consumer could not handle ends it: say why instead of timing out."""
        if self._failed():
            assert self._consumer is not None
            error = self._consumer.exception()
            raise AssertionError(f"{self.who.id}'s signal consumer stopped: {error!r}")

    async def close(self) -> None:
        consumer_error: BaseException | None = None
        if self._consumer is not None:
            self._consumer.cancel()
            (outcome,) = await asyncio.gather(self._consumer, return_exceptions=True)
            if not isinstance(outcome, asyncio.CancelledError | None):
                consumer_error = outcome
        try:
            for link in self.links.values():
                await link.close()
        finally:
            if self.socket is not None:
                await self.socket.close()
        if consumer_error is not None:
            raise AssertionError(f"{self.who.id}'s signal consumer failed") from consumer_error


class CapTrack(MediaStreamTrack):
    """A video track capped to a screen-share quality: downscaled to `width` x `height` and
    thinned to `frame_rate` by dropping source frames (by their timestamps, so the rate is
    exact whatever the source's pace). `apply()` changes the cap mid-stream."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.size: tuple[int, int] | None = None  # None: the source's own
        self.interval: Fraction | None = None  # None: every frame
        self._due: Fraction | None = None  # media time of the next frame to keep

    def apply(self, quality: dict[str, Any]) -> None:
        """A ScreenShare.quality: {width height frameRate ...}."""
        self.size = (quality["width"], quality["height"])
        self.interval = Fraction(1, quality["frameRate"])
        self._due = None  # the next source frame starts the new pace

    async def recv(self) -> VideoFrame:
        while True:
            frame = await self.source.recv()
            assert isinstance(frame, VideoFrame) and frame.pts is not None
            assert frame.time_base is not None
            at = frame.pts * frame.time_base
            if self.interval is None or self._due is None or at >= self._due:
                break
        if self.interval is not None:
            # Behind by more than one interval (a stall): restart the pace from here.
            due = (self._due or at) + self.interval
            self._due = due if due > at else at + self.interval
        if self.size is None or (frame.width, frame.height) == self.size:
            return frame
        width, height = self.size
        return frame.reformat(width=width, height=height)  # keeps pts and time_base

    def stop(self) -> None:
        super().stop()
        self.source.stop()

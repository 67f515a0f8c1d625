"""Synthetic media for tests with real aiortc peers: paced video and audio tracks, and ICE on
loopback (../shared/notes/calls.md §2b)."""

from __future__ import annotations

import asyncio
import math
from array import array
from fractions import Fraction

import aioice.ice
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

VIDEO_CLOCK = 90_000  # RTP's video clock, what aiortc's own sources use


def patch_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """ICE candidates on 127.0.0.1 only: aioice leaves out exactly "127.0.0.1", and aiortc has
    no option for it (the name is looked up at call time, so patching the module works)."""
    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback)


class _Paced(MediaStreamTrack):
    """Frame `n` is returned no earlier than `n / rate` s after the first: aiortc's sender
    pulls as fast as recv() returns."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate
        self.sent = 0
        self.first_sent_at: float | None = None  # loop time of the first frame handed out

    async def _next(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self.first_sent_at is None:
            self.first_sent_at = loop.time()
        delay = self.first_sent_at + self.sent / self.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        self.sent += 1
        return self.sent - 1


class FakeVideoTrack(_Paced):
    """Vertical stripes moving sideways (so VP8 has something to encode), yuv420p."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: float = 15) -> None:
        super().__init__(fps)
        self.width = width
        self.height = height

    async def recv(self) -> VideoFrame:
        index = await self._next()
        frame = VideoFrame(self.width, self.height, "yuv420p")
        luma, *chroma = frame.planes
        row = bytes((3 * x + 8 * index) % 256 for x in range(luma.line_size))
        luma.update(row * luma.height)
        for plane in chroma:
            plane.update(b"\x80" * plane.buffer_size)
        frame.pts = round(index * VIDEO_CLOCK / self.rate)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        return frame


class FakeAudioTrack(_Paced):
    """A mono s16 tone in 20 ms frames (Opus's frame length)."""

    kind = "audio"

    def __init__(self, sample_rate: int = 48_000, frequency: float = 400.0,
                 frame_ms: int = 20) -> None:
        self.samples = sample_rate * frame_ms // 1000
        super().__init__(sample_rate / self.samples)
        self.sample_rate = sample_rate
        self.frequency = frequency

    async def recv(self) -> AudioFrame:
        index = await self._next()
        start = index * self.samples
        tone = array("h", (
            round(8000 * math.sin(2 * math.pi * self.frequency * (start + i) / self.sample_rate))
            for i in range(self.samples)))
        frame = AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(tone.tobytes())
        frame.sample_rate = self.sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, self.sample_rate)
        return frame

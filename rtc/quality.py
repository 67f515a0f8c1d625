"""Screen-share quality: LiveKit's named presets (client-sdk-js `ScreenSharePresets`), or a
custom one within what a mesh can carry. The presenter's browser applies it with
`RTCRtpSender.setParameters` (maxBitrate, maxFramerate, scaleResolutionDownBy) and
`contentHint = "detail"` for text that stays readable."""

from __future__ import annotations

from dataclasses import dataclass

MAX_WIDTH, MAX_HEIGHT, MAX_FPS, MAX_KBPS = 1920, 1080, 30, 5_000
MIN_WIDTH, MIN_HEIGHT, MIN_FPS, MIN_KBPS = 160, 90, 1, 50


@dataclass(frozen=True, slots=True)
class Quality:
    width: int
    height: int
    frame_rate: int
    max_bitrate_kbps: int
    preset: str | None = None


PRESETS: dict[str, Quality] = {
    name: Quality(w, h, fps, kbps, name) for name, w, h, fps, kbps in (
        ("h360fps3", 640, 360, 3, 200),
        ("h360fps15", 640, 360, 15, 400),
        ("h720fps5", 1280, 720, 5, 800),
        ("h720fps15", 1280, 720, 15, 1_500),
        ("h720fps30", 1280, 720, 30, 2_000),
        ("h1080fps15", 1920, 1080, 15, 2_500),
        ("h1080fps30", 1920, 1080, 30, 5_000),
    )
}
DEFAULT_PRESET = "h1080fps15"  # LiveKit's default screen-share encoding


def custom_problem(width: int, height: int, frame_rate: int, kbps: int) -> tuple[str, str] | None:
    """(field, problem) when a custom quality is out of bounds, else None."""
    for name, value, low, high in (("width", width, MIN_WIDTH, MAX_WIDTH),
                                   ("height", height, MIN_HEIGHT, MAX_HEIGHT),
                                   ("frameRate", frame_rate, MIN_FPS, MAX_FPS),
                                   ("maxBitrateKbps", kbps, MIN_KBPS, MAX_KBPS)):
        if not low <= value <= high:
            return f"quality.{name}", f"must be between {low} and {high}"
    return None

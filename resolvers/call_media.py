"""What travels in a call besides signals: the screen share, the recording and its consents,
and the quality reports clients send (docs/calls.md)."""

from __future__ import annotations

from dataclasses import dataclass

from graph_db.models import RoomRecord
from observability.metrics import (
    SCREEN_SHARE_BITRATE,
    SCREEN_SHARE_FPS,
    SCREEN_SHARE_HEIGHT,
    WEBRTC_CONNECTIONS,
    WEBRTC_PACKET_LOSS,
    WEBRTC_RTT,
)
from resolvers import policy
from resolvers.access import access_room_for
from resolvers.calls import in_room, limit
from resolvers.context import Context
from resolvers.errors import BadInput, NotInCall
from rtc.quality import DEFAULT_PRESET, PRESETS, Quality, custom_problem
from rtc.state import CallState, Presenter

CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay", "unknown")


@dataclass(frozen=True, slots=True)
class CustomQuality:
    width: int
    height: int
    frame_rate: int
    max_bitrate_kbps: int


def quality_of(custom: CustomQuality | None, preset: str | None, *,
               default: bool) -> Quality:
    """A preset by name, or a custom quality within bounds; neither: LiveKit's default."""
    if custom is not None and preset is not None:
        raise BadInput("preset", "give a quality or a preset, not both")
    if preset is not None:
        return PRESETS[preset]
    if custom is None:
        if not default:
            raise BadInput("quality", "give a quality or a preset")
        return PRESETS[DEFAULT_PRESET]
    problem = custom_problem(custom.width, custom.height, custom.frame_rate,
                             custom.max_bitrate_kbps)
    if problem is not None:
        raise BadInput(*problem)
    return Quality(custom.width, custom.height, custom.frame_rate, custom.max_bitrate_kbps)


# -- screen share ---------------------------------------------------------------------------

async def screen_share_of(ctx: Context, room: RoomRecord) -> Presenter | None:
    """Inactive for those outside the room's call circle (non-participants)."""
    member = await ctx.loaders.membership.load((room.id, ctx.viewer.id))
    if not policy.can_call(ctx.viewer.role, member):
        return None
    state: CallState = await ctx.loaders.call.load(room.id)
    return state.presenter


async def start_share(ctx: Context, room_id: str, quality: Quality,
                      take_over: bool) -> Presenter:
    found = await in_room(ctx, room_id)
    may = policy.can_take_over_share(found.viewer.role, found.member)
    return await ctx.services.rtc.screens.start(room_id, found.viewer.id, quality,
                                                take_over=take_over, may_take_over=may)


async def stop_share(ctx: Context, room_id: str) -> None:
    found = await in_room(ctx, room_id)
    manager = policy.can_take_over_share(found.viewer.role, found.member)
    await ctx.services.rtc.screens.stop(room_id, found.viewer.id, is_manager=manager)


async def tune_share(ctx: Context, room_id: str, quality: Quality) -> Presenter:
    found = await in_room(ctx, room_id)
    manager = policy.can_take_over_share(found.viewer.role, found.member)
    return await ctx.services.rtc.screens.tune(room_id, found.viewer.id, quality,
                                               is_manager=manager)


# -- recording -----------------------------------------------------------------------------

async def start_recording(ctx: Context, room_id: str) -> CallState:
    found = await access_room_for(ctx, room_id, policy.can_record, "record the call of")
    return await ctx.services.rtc.recordings.start(room_id, found.viewer.id)


async def stop_recording(ctx: Context, room_id: str) -> CallState:
    found = await access_room_for(ctx, room_id, policy.can_record,
                                  "stop the recording of the call of")
    return await ctx.services.rtc.recordings.stop(room_id, found.viewer.id)


async def consent(ctx: Context, room_id: str, granted: bool) -> CallState:
    found = await in_room(ctx, room_id)
    return await ctx.services.rtc.recordings.consent(room_id, found.viewer.id, granted)


# -- quality reports -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CallStats:
    room_id: str
    session_id: str
    connected: bool
    local_candidate: str | None
    remote_candidate: str | None
    round_trip_ms: float | None
    packets_lost: int | None
    packets_received: int | None
    bitrate_kbps: float | None
    frame_rate: float | None
    width: int | None
    height: int | None
    screen_share: bool


def _check_stats(s: CallStats) -> None:
    for name, value, high in (("roundTripMs", s.round_trip_ms, 60_000),
                              ("packetsLost", s.packets_lost, 10**9),
                              ("packetsReceived", s.packets_received, 10**9),
                              ("bitrateKbps", s.bitrate_kbps, 100_000),
                              ("frameRate", s.frame_rate, 240),
                              ("width", s.width, 8192), ("height", s.height, 8192)):
        if value is not None and not 0 <= value <= high:
            raise BadInput(f"input.{name}", f"must be between 0 and {high}")
    for name, kind in (("localCandidate", s.local_candidate),
                       ("remoteCandidate", s.remote_candidate)):
        if kind is not None and kind not in CANDIDATE_TYPES:
            raise BadInput(f"input.{name}", f"one of {', '.join(CANDIDATE_TYPES)}")


async def report_stats(ctx: Context, stats: CallStats) -> bool:
    _check_stats(stats)
    found = await in_room(ctx, stats.room_id)
    rtc = ctx.services.rtc
    limit(rtc.report_rates, found.viewer.id, "call_stats")
    me = (await rtc.calls.state(stats.room_id)).members.get(found.viewer.id)
    if me is None or me.session_id != stats.session_id:
        raise NotInCall("you are not in this room's call with that session", who="sender")
    _observe(stats)
    return True


def _observe(s: CallStats) -> None:
    outcome = "connected" if s.connected else "failed"
    WEBRTC_CONNECTIONS.labels(outcome, s.local_candidate or "unknown").inc()
    if not s.connected:
        return
    if s.round_trip_ms is not None:
        WEBRTC_RTT.observe(s.round_trip_ms / 1000)
    if s.packets_lost is not None and s.packets_received is not None:
        expected = s.packets_lost + s.packets_received
        if expected:
            WEBRTC_PACKET_LOSS.observe(s.packets_lost / expected)
    if s.screen_share:
        if s.frame_rate is not None:
            SCREEN_SHARE_FPS.observe(s.frame_rate)
        if s.height is not None:
            SCREEN_SHARE_HEIGHT.observe(s.height)
        if s.bitrate_kbps is not None:
            SCREEN_SHARE_BITRATE.observe(s.bitrate_kbps)

"""Call operations: each field parses its arguments and hands over to resolvers/."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from resolvers import call_media, calls
from resolvers.audit import audited
from resolvers.context import Context
from rtc.quality import Quality
from schema.calls import (
    Call,
    CallParticipant,
    CallRecording,
    CallSession,
    RtcConfiguration,
    ScreenShare,
    ScreenSharePreset,
    SignalKind,
    WebRtcSignal,
)

Ctx = Info[Context, None]


@strawberry.input
class ScreenShareQualityInput:
    width: int
    height: int
    frame_rate: int
    max_bitrate_kbps: int


@strawberry.input
class WebRtcSignalInput:
    room_id: strawberry.ID
    to_user_id: strawberry.ID
    kind: SignalKind
    session_id: str
    sdp: str | None = None
    candidate: JSON | None = None


@strawberry.input(description="What a client measured of one peer connection (getStats).")
class CallStatsInput:
    room_id: strawberry.ID
    session_id: str
    connected: bool = strawberry.field(description="false: it failed (ICE failed, or no "
                                                   "candidate pair within the client's timeout)")
    local_candidate_type: str | None = strawberry.field(
        default=None, description="host, srflx, prflx, relay")
    remote_candidate_type: str | None = None
    round_trip_ms: float | None = None
    packets_lost: int | None = None
    packets_received: int | None = None
    bitrate_kbps: float | None = None
    frame_rate: float | None = None
    width: int | None = None
    height: int | None = None
    screen_share: bool = strawberry.field(default=False, description="These figures are of a "
                                                                     "received screen share.")


def _quality(quality: ScreenShareQualityInput | None, preset: ScreenSharePreset | None, *,
             default: bool) -> Quality:
    custom = (call_media.CustomQuality(quality.width, quality.height, quality.frame_rate,
                                       quality.max_bitrate_kbps) if quality else None)
    return call_media.quality_of(custom, preset.value if preset else None, default=default)


@strawberry.type
class CallQuery:
    @strawberry.field(description="ICE servers; with `roomId` (its participants only) TURN "
                                  "with credentials minted for TURN_CREDENTIAL_TTL.",
                      extensions=audited("RtcConfiguration", room="room_id"))
    async def rtc_configuration(self, info: Ctx,
                                room_id: strawberry.ID | None = None) -> RtcConfiguration:
        return RtcConfiguration.of(await calls.rtc_configuration(info.context, room_id))


@strawberry.type
class CallMutation:
    @strawberry.mutation(extensions=audited("Call", room="room_id"))
    async def join_call(self, info: Ctx, room_id: strawberry.ID, audio: bool = True,
                        video: bool = True) -> CallSession:
        ctx = info.context
        joined = await calls.join_call(ctx, room_id, audio, video)
        state, me = joined.state, joined.member
        return CallSession(
            session_id=me.session_id, video_allowed=joined.video_allowed,
            call=Call.of(room_id, state, ctx.settings.call_max_video),
            peers=[CallParticipant.of(m, state.presenter) for m in state.people
                   if m.user_id != me.user_id],
            rtc_configuration=RtcConfiguration.of(calls.ice(ctx, with_turn=True)))

    @strawberry.mutation(extensions=audited("Call", room="room_id"))
    async def leave_call(self, info: Ctx, room_id: strawberry.ID) -> bool:
        return await calls.leave_call(info.context, room_id)

    @strawberry.mutation(extensions=audited("Call", room="room_id"))
    async def update_media_state(self, info: Ctx, room_id: strawberry.ID,
                                 audio: bool | None = None,
                                 video: bool | None = None) -> CallParticipant:
        member, state = await calls.update_media(info.context, room_id, audio, video)
        return CallParticipant.of(member, state.presenter)

    @strawberry.mutation(description="To one participant of the call; never stored.")
    async def send_webrtc_signal(self, info: Ctx, input: WebRtcSignalInput) -> bool:
        return await calls.send_signal(info.context, input.room_id, input.to_user_id,
                                       input.kind.value, input.session_id, input.sdp,
                                       input.candidate)

    @strawberry.mutation(extensions=audited("ScreenShare", room="room_id"))
    async def start_screen_share(self, info: Ctx, room_id: strawberry.ID,
                                 quality: ScreenShareQualityInput | None = None,
                                 preset: ScreenSharePreset | None = None,
                                 take_over: bool = False) -> ScreenShare:
        return ScreenShare.of(await call_media.start_share(
            info.context, room_id, _quality(quality, preset, default=True), take_over))

    @strawberry.mutation(extensions=audited("ScreenShare", room="room_id"))
    async def stop_screen_share(self, info: Ctx, room_id: strawberry.ID) -> ScreenShare:
        await call_media.stop_share(info.context, room_id)
        return ScreenShare.of(None)

    @strawberry.mutation(extensions=audited("ScreenShare", room="room_id"))
    async def update_screen_share_quality(self, info: Ctx, room_id: strawberry.ID,
                                          quality: ScreenShareQualityInput | None = None,
                                          preset: ScreenSharePreset | None = None
                                          ) -> ScreenShare:
        return ScreenShare.of(await call_media.tune_share(
            info.context, room_id, _quality(quality, preset, default=False)))

    @strawberry.mutation(extensions=audited("Recording", room="room_id"))
    async def start_recording(self, info: Ctx, room_id: strawberry.ID) -> CallRecording:
        return CallRecording.of_state(await call_media.start_recording(info.context, room_id))

    @strawberry.mutation(extensions=audited("Recording", room="room_id"))
    async def stop_recording(self, info: Ctx, room_id: strawberry.ID) -> CallRecording:
        return CallRecording.of_state(await call_media.stop_recording(info.context, room_id))

    @strawberry.mutation(extensions=audited("Recording", room="room_id"))
    async def give_recording_consent(self, info: Ctx, room_id: strawberry.ID,
                                     granted: bool) -> CallRecording:
        return CallRecording.of_state(await call_media.consent(info.context, room_id, granted))

    @strawberry.mutation(description="How a peer connection went (the seed's WebRTC "
                                     "connection success rate, screen-share quality).")
    async def report_call_stats(self, info: Ctx, input: CallStatsInput) -> bool:
        return await call_media.report_stats(info.context, call_media.CallStats(
            room_id=input.room_id, session_id=input.session_id, connected=input.connected,
            local_candidate=input.local_candidate_type,
            remote_candidate=input.remote_candidate_type, round_trip_ms=input.round_trip_ms,
            packets_lost=input.packets_lost, packets_received=input.packets_received,
            bitrate_kbps=input.bitrate_kbps, frame_rate=input.frame_rate, width=input.width,
            height=input.height, screen_share=input.screen_share))


@strawberry.type
class CallSubscription:
    @strawberry.subscription(description="Signals addressed to the caller in this room.")
    async def webrtc_signals(self, info: Ctx, room_id: strawberry.ID
                             ) -> AsyncGenerator[WebRtcSignal, None]:
        async for signal in calls.signals(info.context, room_id):
            yield WebRtcSignal.of(signal)

"""Calls: participants and their media, screen share, recording, ICE configuration, signals
(docs/calls.md). Built from rtc/ state; users resolved through the loaders."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Self

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from resolvers import room_events as resolve
from resolvers.context import Context
from rtc.signals import Signal
from rtc.state import CallState, Member, Presenter, Recording
from rtc.turn import IceConfiguration
from schema.users import User

Ctx = Info[Context, None]


def _at(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None


async def _user(info: Ctx, user_id: str) -> User:
    return User.of(await resolve.user_of(info.context, user_id))


@strawberry.enum
class SignalKind(enum.Enum):
    OFFER = "OFFER"
    ANSWER = "ANSWER"
    ICE_CANDIDATE = "ICE_CANDIDATE"
    HANGUP = "HANGUP"


@strawberry.enum(description="LiveKit's screen-share presets: resolution, frames per second "
                             "(bitrate: 200 kbps … 5 Mbps).")
class ScreenSharePreset(enum.Enum):
    H360FPS3 = "h360fps3"
    H360FPS15 = "h360fps15"
    H720FPS5 = "h720fps5"
    H720FPS15 = "h720fps15"
    H720FPS30 = "h720fps30"
    H1080FPS15 = "h1080fps15"
    H1080FPS30 = "h1080fps30"


@strawberry.enum
class RecordingState(enum.Enum):
    OFF = "OFF"
    RECORDING = "RECORDING"


@strawberry.type
class IceServer:
    urls: list[str]
    username: str | None
    credential: str | None


@strawberry.type(description="Re-fetch before `expiresAt` and before every join, ICE restart "
                             "or reconnect.")
class RtcConfiguration:
    ice_servers: list[IceServer]
    expires_at: datetime = strawberry.field(description="When the TURN credentials stop "
                                                        "working.")

    @classmethod
    def of(cls, config: IceConfiguration) -> Self:
        return cls(ice_servers=[IceServer(urls=list(s.urls), username=s.username,
                                          credential=s.credential) for s in config.servers],
                   expires_at=config.expires_at)


@strawberry.type
class ScreenShareQuality:
    width: int
    height: int
    frame_rate: int
    max_bitrate_kbps: int
    preset: ScreenSharePreset | None


@strawberry.type
class ScreenShare:
    active: bool
    started_at: datetime | None
    quality: ScreenShareQuality | None
    _presenter: strawberry.Private[str | None]

    @classmethod
    def of(cls, p: Presenter | None) -> Self:
        if p is None:
            return cls(active=False, started_at=None, quality=None, _presenter=None)
        preset = ScreenSharePreset(p.preset) if p.preset else None
        quality = ScreenShareQuality(width=p.width, height=p.height, frame_rate=p.frame_rate,
                                     max_bitrate_kbps=p.max_bitrate_kbps, preset=preset)
        return cls(active=True, started_at=_at(p.since_ms), quality=quality,
                   _presenter=p.user_id)

    @classmethod
    def of_data(cls, data: dict[str, Any] | None) -> Self:
        return cls.of(Presenter(**data) if data else None)

    @strawberry.field
    async def presenter(self, info: Ctx) -> User | None:
        return await _user(info, self._presenter) if self._presenter else None


@strawberry.type
class CallParticipant:
    session_id: str = strawberry.field(description="Signals to and from this participant "
                                                   "carry it.")
    audio: bool
    video: bool
    joined_at: datetime
    presenting: bool
    recording_consent: bool | None = strawberry.field(
        description="Their answer to the current recording (null: none yet).")
    _user_id: strawberry.Private[str]

    @classmethod
    def of(cls, m: Member, presenter: Presenter | None = None, *,
           presenting: bool | None = None) -> Self:
        if presenting is None:
            presenting = presenter is not None and presenter.user_id == m.user_id
        return cls(session_id=m.session_id, audio=m.audio, video=m.video,
                   joined_at=_at(m.joined_ms) or datetime.now(UTC), presenting=presenting,
                   recording_consent=m.consent, _user_id=m.user_id)

    @classmethod
    def of_data(cls, data: dict[str, Any]) -> Self:
        presenting = bool(data.pop("presenting", False))
        return cls.of(Member(**data), presenting=presenting)

    @strawberry.field
    async def user(self, info: Ctx) -> User:
        return await _user(info, self._user_id)


@strawberry.type
class RecordingConsent:
    granted: bool
    at: datetime
    _user_id: strawberry.Private[str]

    @strawberry.field
    async def user(self, info: Ctx) -> User:
        return await _user(info, self._user_id)


@strawberry.type
class CallRecording:
    state: RecordingState
    started_at: datetime | None
    consents: list[RecordingConsent]
    _requested_by: strawberry.Private[str | None]

    @classmethod
    def of(cls, recording: Recording, members: list[Member]) -> Self:
        consents = [RecordingConsent(granted=m.consent, at=_at(m.consent_ms) or datetime.now(UTC),
                                     _user_id=m.user_id)
                    for m in members if m.consent is not None]
        return cls(state=RecordingState(recording.state), started_at=_at(recording.started_ms),
                   consents=consents, _requested_by=recording.requested_by)

    @classmethod
    def of_data(cls, data: dict[str, Any]) -> Self:
        members = [Member(user_id=c["user_id"], session_id="", joined_ms=0, seen_ms=0,
                          audio=False, video=False, consent=c["granted"], consent_ms=c["at_ms"])
                   for c in data.get("consents", ())]
        recording = Recording(state=data["state"], requested_by=data.get("requested_by"),
                              started_ms=data.get("started_ms"))
        return cls.of(recording, members)

    @classmethod
    def of_state(cls, state: CallState) -> Self:
        return cls.of(state.recording, list(state.members.values()))

    @strawberry.field
    async def requested_by(self, info: Ctx) -> User | None:
        return await _user(info, self._requested_by) if self._requested_by else None


@strawberry.type
class Call:
    room_id: strawberry.ID
    participants: list[CallParticipant]
    recording: CallRecording
    started_at: datetime | None
    max_video: int = strawberry.field(description="At most this many participants send video "
                                                  "(full mesh); later ones join audio-only.")

    @classmethod
    def of(cls, room_id: str, state: CallState, max_video: int) -> Self:
        members = sorted(state.members.values(), key=lambda m: m.joined_ms)
        return cls(room_id=strawberry.ID(room_id),
                   participants=[CallParticipant.of(m, state.presenter) for m in members],
                   recording=CallRecording.of(state.recording, members),
                   started_at=_at(state.started_ms), max_video=max_video)


@strawberry.type
class CallSession:
    session_id: str = strawberry.field(description="Send it with every signal of this call.")
    video_allowed: bool = strawberry.field(description="False: the call already has its "
                                                       "maximum of video senders.")
    call: Call
    peers: list[CallParticipant] = strawberry.field(
        description="Everyone else in the call: the joiner sends each an OFFER.")
    rtc_configuration: RtcConfiguration


@strawberry.type
class WebRtcSignal:
    id: strawberry.ID
    room_id: strawberry.ID
    kind: SignalKind
    session_id: str = strawberry.field(description="Groups the signals of one peer "
                                                   "connection.")
    sdp: str | None
    candidate: JSON | None
    at: datetime
    _from: strawberry.Private[str]

    @classmethod
    def of(cls, s: Signal) -> Self:
        return cls(id=strawberry.ID(s.id), room_id=strawberry.ID(s.room_id),
                   kind=SignalKind(s.kind), session_id=s.session_id, sdp=s.sdp,
                   candidate=s.candidate,  # type: ignore[arg-type]  # JSON is Any at run time
                   at=_at(s.at_ms) or datetime.now(UTC), _from=s.from_user)

    @strawberry.field(name="from")
    async def from_(self, info: Ctx) -> User:
        return await _user(info, self._from)

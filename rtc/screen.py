"""Screen sharing: one presenter per room, taken atomically with the call's state (two
concurrent starts, on any instances: one wins, the other gets PRESENTER_BUSY); a host or
moderator may take it over. It ends when the presenter stops, leaves the call or the room,
or goes stale (rtc/calls.py ends it with the participant)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from graph_db.events import EventType
from observability.metrics import SCREEN_SHARES
from resolvers.errors import FeatureDisabled, Forbidden, NotInCall, PresenterBusy
from rtc.calls import CallService
from rtc.quality import Quality
from rtc.state import CallState, Presenter, now_ms


def share_data(presenter: Presenter | None) -> dict[str, Any]:
    return {"screenShare": asdict(presenter) if presenter else None}


class ScreenShares:
    def __init__(self, calls: CallService, *, enabled: bool) -> None:
        self.calls = calls
        self.enabled = enabled

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise FeatureDisabled("screen sharing is turned off on this service "
                                  "(ENABLE_SCREEN_SHARING)", feature="screenSharing")

    async def start(self, room_id: str, user_id: str, quality: Quality, *, take_over: bool,
                    may_take_over: bool) -> Presenter:
        self._check_enabled()

        def change(state: CallState) -> tuple[Presenter, str]:
            member = state.members.get(user_id)
            if member is None or not member.alive(now_ms(), self.calls.stale_ms):
                raise NotInCall("join the call before sharing your screen", who="sender")
            held = state.presenter
            what = "started"
            if held is not None and held.user_id != user_id:
                if not (take_over and may_take_over):
                    raise PresenterBusy("someone else is sharing their screen in this room",
                                        presenterId=held.user_id)
                what = "taken_over"
            state.presenter = Presenter(
                user_id=user_id, session_id=member.session_id, since_ms=now_ms(),
                width=quality.width, height=quality.height, frame_rate=quality.frame_rate,
                max_bitrate_kbps=quality.max_bitrate_kbps, preset=quality.preset)
            return state.presenter, what

        presenter, what = await self.calls.update(room_id, change)
        SCREEN_SHARES.labels(what, quality.preset or "custom").inc()
        await self.calls.publish(room_id, EventType.SCREEN_SHARE_CHANGED, user_id,
                                 **share_data(presenter))
        return presenter

    async def stop(self, room_id: str, user_id: str, *, is_manager: bool) -> None:
        """Idempotent: stopping when nobody presents changes nothing."""
        def change(state: CallState) -> Presenter | None:
            held = state.presenter
            if held is not None and held.user_id != user_id and not is_manager:
                raise Forbidden("only the presenter, a host or a moderator stops a "
                                "screen share")
            state.presenter = None
            return held

        held = await self.calls.update(room_id, change)
        if held is not None:
            SCREEN_SHARES.labels("stopped", held.preset or "custom").inc()
            await self.calls.publish(room_id, EventType.SCREEN_SHARE_CHANGED, user_id,
                                     **share_data(None))

    async def tune(self, room_id: str, user_id: str, quality: Quality, *,
                   is_manager: bool) -> Presenter:
        self._check_enabled()

        def change(state: CallState) -> Presenter:
            held = state.presenter
            if held is None:
                raise NotInCall("nobody is sharing their screen in this room",
                                who="presenter")
            if held.user_id != user_id and not is_manager:
                raise Forbidden("only the presenter, a host or a moderator changes the "
                                "quality of a screen share")
            held.width, held.height = quality.width, quality.height
            held.frame_rate, held.max_bitrate_kbps = quality.frame_rate, quality.max_bitrate_kbps
            held.preset = quality.preset
            return held

        presenter = await self.calls.update(room_id, change)
        SCREEN_SHARES.labels("tuned", quality.preset or "custom").inc()
        await self.calls.publish(room_id, EventType.SCREEN_SHARE_CHANGED, user_id,
                                 **share_data(presenter))
        return presenter

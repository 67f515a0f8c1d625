"""Calls: WebRTC signaling, TURN credentials, screen sharing, consented recording
(docs/calls.md). State in rtc/state.py (Redis or this process), rules in the services here."""

from __future__ import annotations

from dataclasses import dataclass

from rtc.calls import CallService
from rtc.recording import RecordingService
from rtc.screen import ScreenShares
from rtc.signals import SessionRates, SignalRouter


@dataclass
class Rtc:
    calls: CallService
    screens: ScreenShares
    recordings: RecordingService
    router: SignalRouter
    signal_rates: SessionRates  # per call session
    report_rates: SessionRates  # reportCallStats, per user

    async def start(self) -> None:
        await self.calls.start()

    async def close(self) -> None:
        await self.recordings.close()
        await self.calls.close()


__all__ = ["Rtc"]

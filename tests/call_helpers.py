"""Calls in tests: the documents, and a persona's signal socket (webrtcSignals over a real
graphql-transport-ws connection, signals sent with the real mutation)."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from tests.harness import LiveServer
from tests.personas import Persona
from tests.wsclient import WSClient, connect

PARTICIPANT = "sessionId audio video presenting recordingConsent joinedAt user { id }"
JOIN = f"""
mutation($room: ID!, $audio: Boolean, $video: Boolean) {{
  joinCall(roomId: $room, audio: $audio, video: $video) {{
    sessionId videoAllowed
    peers {{ {PARTICIPANT} }}
    call {{ maxVideo participants {{ {PARTICIPANT} }} }}
    rtcConfiguration {{ expiresAt iceServers {{ urls username credential }} }}
  }}
}}"""
LEAVE = "mutation($room: ID!) { leaveCall(roomId: $room) }"
MEDIA = f"""
mutation($room: ID!, $audio: Boolean, $video: Boolean) {{
  updateMediaState(roomId: $room, audio: $audio, video: $video) {{ {PARTICIPANT} }}
}}"""
CALL = f"""
query($room: ID!) {{
  room(id: $room) {{
    call {{ maxVideo participants {{ {PARTICIPANT} }}
           recording {{ state consents {{ granted user {{ id }} }} }} }}
    screenShare {{ active presenter {{ id }}
                  quality {{ width height frameRate maxBitrateKbps preset }} }}
  }}
}}"""
SIGNAL = "mutation($input: WebRtcSignalInput!) { sendWebrtcSignal(input: $input) }"
SIGNALS = """
subscription($room: ID!) {
  webrtcSignals(roomId: $room) { id kind sessionId sdp candidate from { id } }
}"""
RTC_CONFIG = """
query($room: ID) {
  rtcConfiguration(roomId: $room) { expiresAt iceServers { urls username credential } }
}"""
SHARE = """
mutation($room: ID!, $quality: ScreenShareQualityInput, $preset: ScreenSharePreset,
         $takeOver: Boolean) {
  startScreenShare(roomId: $room, quality: $quality, preset: $preset, takeOver: $takeOver) {
    active presenter { id } quality { width height frameRate maxBitrateKbps preset }
  }
}"""
UNSHARE = "mutation($room: ID!) { stopScreenShare(roomId: $room) { active } }"
TUNE = """
mutation($room: ID!, $quality: ScreenShareQualityInput, $preset: ScreenSharePreset) {
  updateScreenShareQuality(roomId: $room, quality: $quality, preset: $preset) {
    active presenter { id } quality { width height frameRate maxBitrateKbps preset }
  }
}"""
RECORDING = "state startedAt requestedBy { id } consents { granted at user { id } }"
START_RECORDING = f"mutation($room: ID!) {{ startRecording(roomId: $room) {{ {RECORDING} }} }}"
STOP_RECORDING = f"mutation($room: ID!) {{ stopRecording(roomId: $room) {{ {RECORDING} }} }}"
CONSENT = f"""
mutation($room: ID!, $granted: Boolean!) {{
  giveRecordingConsent(roomId: $room, granted: $granted) {{ {RECORDING} }}
}}"""
STATS = "mutation($input: CallStatsInput!) { reportCallStats(input: $input) }"
CALL_EVENTS = f"""
subscription($room: ID!) {{
  roomEvents(roomId: $room) {{
    __typename
    ... on CallParticipantJoined {{ participant {{ {PARTICIPANT} }} }}
    ... on CallParticipantLeft {{ reason user {{ id }} }}
    ... on MediaStateChanged {{ participant {{ {PARTICIPANT} }} }}
    ... on ScreenShareChanged {{ screenShare {{ active presenter {{ id }}
                                 quality {{ width height frameRate preset }} }} }}
    ... on RecordingConsentRequested {{ recording {{ {RECORDING} }} }}
    ... on RecordingStateChanged {{ recording {{ {RECORDING} }} }}
  }}
}}"""
_ids = itertools.count(1)


async def join(who: Persona, room_id: str, *, audio: bool = True,
               video: bool = True) -> dict[str, Any]:
    data = await who.gql(JOIN, room=room_id, audio=audio, video=video)
    session: dict[str, Any] = data["joinCall"]
    return session


class SignalSocket:
    """One persona's webrtcSignals subscription of one room, and their sends."""

    def __init__(self, who: Persona, room_id: str, ws: WSClient, op: str) -> None:
        self.who, self.room_id, self.ws, self.op = who, room_id, ws, op
        self.session_id = ""

    @classmethod
    async def open(cls, ws_url: str, who: Persona, room_id: str) -> SignalSocket:
        ws = await connect(ws_url, who.token)
        op = f"signals-{next(_ids)}"
        await ws.subscribe(op, SIGNALS, {"room": room_id})
        return cls(who, room_id, ws, op)

    async def send(self, to: str, kind: str, *, sdp: str | None = None,
                   candidate: dict[str, Any] | None = None,
                   session_id: str | None = None) -> dict[str, Any]:
        """The raw response body (errors included)."""
        payload = {"roomId": self.room_id, "toUserId": to, "kind": kind,
                   "sessionId": session_id or self.session_id, "sdp": sdp,
                   "candidate": candidate}
        return await self.who.post(SIGNAL, {"input": payload})

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        message = await self.ws.next_message(timeout, id=self.op)
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        signal: dict[str, Any] = message["payload"]["data"]["webrtcSignals"]
        return signal

    async def close(self) -> None:
        await self.ws.close()


async def metric(live: LiveServer, series: str) -> float:
    """The value of one series of /metrics (0 when absent)."""
    async with httpx.AsyncClient(base_url=live.url) as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0

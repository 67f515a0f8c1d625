"""Calls: ICE configuration, joining and leaving, media state, signals (docs/calls.md).
Parse → access check (participants only) → rtc/ → return."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import orjson

from graph_db.models import RoomRecord
from observability.metrics import rate_limited
from resolvers import audit, policy
from resolvers.access import RoomAccess, access_room_for
from resolvers.context import Context
from resolvers.errors import BadInput, NotInCall
from rtc import turn
from rtc.calls import Joined
from rtc.signals import SessionRates, Signal
from rtc.state import CallState, Member, now_ms
from transport.rate_limit import RateLimited

SESSION_ID_MAX = 64


async def in_room(ctx: Context, room_id: str) -> RoomAccess:
    """The access helper of calls: a room the caller participates in."""
    return await access_room_for(ctx, room_id, policy.can_call, "take part in the call of")


def limit(rates: SessionRates, key: str, kind: str) -> None:
    """RATE_LIMITED (counted under `kind`) when `key`'s bucket is empty."""
    wait = rates.take(key)
    if wait is not None:
        rate_limited(kind)
        raise RateLimited(max(1, round(wait + 0.5)))


def ice(ctx: Context, *, with_turn: bool) -> turn.IceConfiguration:
    s = ctx.settings
    return turn.configuration(stun=s.stun_servers, turn_url=s.turn_server_url,
                              turns_url=s.turns_server_url, secret=s.turn_secret,
                              ttl=s.turn_credential_ttl, now=datetime.now(UTC),
                              with_turn=with_turn)


async def rtc_configuration(ctx: Context, room_id: str | None) -> turn.IceConfiguration:
    """STUN for anyone signed in; TURN (a relay costs bandwidth) for a room's participants."""
    ctx.viewer  # noqa: B018  (signed in, or UNAUTHENTICATED)
    if room_id is None:
        return ice(ctx, with_turn=False)
    await in_room(ctx, room_id)
    return ice(ctx, with_turn=True)


async def join_call(ctx: Context, room_id: str, audio: bool, video: bool) -> Joined:
    found = await in_room(ctx, room_id)
    return await ctx.services.rtc.calls.join(room_id, found.viewer.id, audio=audio,
                                             video=video)


async def leave_call(ctx: Context, room_id: str) -> bool:
    found = await in_room(ctx, room_id)
    return await ctx.services.rtc.calls.leave(room_id, found.viewer.id, "left")


async def update_media(ctx: Context, room_id: str, audio: bool | None,
                       video: bool | None) -> tuple[Member, CallState]:
    found = await in_room(ctx, room_id)
    return await ctx.services.rtc.calls.set_media(room_id, found.viewer.id, audio=audio,
                                                  video=video)


async def call_of(ctx: Context, room: RoomRecord) -> CallState | None:
    """A room's call for its participants (others do not learn who is in it); None when
    nobody is in a call."""
    member = await ctx.loaders.membership.load((room.id, ctx.viewer.id))
    if not policy.can_call(ctx.viewer.role, member):
        return None
    state: CallState = await ctx.loaders.call.load(room.id)
    return state if state.members else None


# -- signals -----------------------------------------------------------------------------

def _checked_signal(ctx: Context, kind: str, session_id: str, sdp: str | None,
                    candidate: Any) -> dict[str, Any] | None:
    """The fields a kind needs, within their limits; the candidate as a JSON object."""
    s = ctx.settings
    if not 0 < len(session_id) <= SESSION_ID_MAX:
        raise BadInput("sessionId", "is not a call session")
    if kind in ("OFFER", "ANSWER"):
        if not sdp or candidate is not None:
            raise BadInput("sdp", f"{kind} carries an sdp and no candidate")
        if len(sdp.encode()) > s.signal_sdp_max_bytes:
            raise BadInput("sdp", f"longer than {s.signal_sdp_max_bytes} bytes",
                           maxBytes=s.signal_sdp_max_bytes)
        return None
    if kind == "ICE_CANDIDATE":
        if sdp is not None or not isinstance(candidate, dict):
            raise BadInput("candidate", "ICE_CANDIDATE carries a candidate object "
                                        "(RTCIceCandidateInit) and no sdp")
        if len(orjson.dumps(candidate)) > s.signal_candidate_max_bytes:
            raise BadInput("candidate", f"longer than {s.signal_candidate_max_bytes} bytes",
                           maxBytes=s.signal_candidate_max_bytes)
        return candidate
    if sdp is not None or candidate is not None:
        raise BadInput("kind", "HANGUP carries neither sdp nor candidate")
    return None


async def send_signal(ctx: Context, room_id: str, to_user: str, kind: str, session_id: str,
                      sdp: str | None, candidate: Any) -> bool:
    candidate = _checked_signal(ctx, kind, session_id, sdp, candidate)
    found = await in_room(ctx, room_id)
    rtc = ctx.services.rtc
    limit(rtc.signal_rates, session_id, "signals")
    state = await rtc.calls.state(room_id)
    me = state.members.get(found.viewer.id)
    if me is None or me.session_id != session_id:
        raise NotInCall("you are not in this room's call with that session", who="sender")
    if to_user == found.viewer.id or to_user not in state.members:
        raise NotInCall("the addressee is not in this room's call", who="recipient")
    await rtc.router.send(Signal(id=secrets.token_hex(8), room_id=room_id,
                                 from_user=found.viewer.id, to_user=to_user, kind=kind,
                                 session_id=session_id, sdp=sdp, candidate=candidate,
                                 at_ms=now_ms()))
    return True


async def signals(ctx: Context, room_id: str) -> AsyncGenerator[Signal, None]:
    """Signals addressed to the caller in this room, as long as they participate. The
    socket keeps the caller in the call (rtc/calls.py: gone after a grace)."""
    try:
        found = await in_room(ctx, room_id)
    except BaseException as exc:
        audit.subscription(ctx, "start", room_id, *audit.outcome_of(exc))
        raise
    audit.subscription(ctx, "start", room_id)
    rtc, user_id = ctx.services.rtc, found.viewer.id
    queue = await rtc.router.open(room_id, user_id)
    try:
        await rtc.calls.socket_opened(room_id, user_id)
        while True:
            yield await queue.get()
    finally:
        await rtc.router.close(room_id, user_id, queue)
        rtc.calls.socket_closed(room_id, user_id)
        audit.subscription(ctx, "end", room_id)


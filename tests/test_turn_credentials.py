"""TURN REST credentials (rtc/turn.py) against a real coturn, with two aiortc peers in this
process and the offer/answer handed over directly (no service involved).

Relay-only peers must connect through coturn with minted credentials; a wrong, expired or
foreign-signed credential must yield no relay candidate at all. With no local candidate aiortc
never starts ICE, so the connection stays "new" instead of failing: clients need a timeout of
their own (../shared/notes/calls.md §2b)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import aioice.ice
import pytest
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from rtc import turn
from tests.turn import TurnServer

CONNECT_TIMEOUT = 10.0
# How long a peer with a refused credential is watched. With no local candidate aiortc
# decides not to start ICE as soon as the answer is applied, so a short look is enough.
HOLD = 1.0
USERNAME = re.compile(r"(\d+):([0-9a-f]{16})")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice leaves 127.0.0.1 out of the host addresses. RELAY gathers none anyway, but
    should the policy ever be ignored, loopback host candidates would connect and the
    relay-only assertions below would catch it rather than an unroutable eth0 address."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses",
                        lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else [])


def relay_only(url: str, username: str, credential: str) -> RTCConfiguration:
    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=url, username=username, credential=credential)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def opaque_id() -> str:
    """Unique per test, so this test's lines are found in the session's shared coturn log."""
    return secrets.token_hex(8)


def candidates(sdp: str) -> list[tuple[str, int]]:
    """(type, port) of every candidate in an SDP (aiortc does not trickle: all are there)."""
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            found.append((fields[fields.index("typ") + 1], int(fields[5])))
    return found


def selected_pair(pc: RTCPeerConnection) -> tuple[str, str]:
    """Types of the (local, remote) candidates of the pair ICE nominated. aiortc 1.16 has no
    getSelectedCandidatePair nor candidate-pair stats, so this reads aioice's nominated pair
    behind the data channel's transports (SCTP -> DTLS -> ICE -> aioice.Connection)."""
    assert pc.sctp is not None
    connection = pc.sctp.transport.transport._connection
    pair = connection._nominated[1]  # component 1: RTP and RTCP are muxed
    return pair.local_candidate.type, pair.remote_candidate.type


@contextlib.asynccontextmanager
async def peers(offerer: RTCConfiguration, answerer: RTCConfiguration
                ) -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    a, b = RTCPeerConnection(offerer), RTCPeerConnection(answerer)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def echo_channels(pc: RTCPeerConnection) -> None:
    """The answerer sends every message back, prefixed with "pong "."""
    @pc.on("datachannel")
    def on_channel(channel: RTCDataChannel) -> None:
        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            channel.send(f"pong {message!s}")


async def negotiate(a: RTCPeerConnection, b: RTCPeerConnection) -> None:
    """In-process signalling; setLocalDescription returns once gathering is complete."""
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def ping(channel: RTCDataChannel) -> str:
    await until(lambda: channel.readyState == "open", CONNECT_TIMEOUT, "the data channel")
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @channel.on("message")
    def on_message(message: str) -> None:
        if not answer.done():
            answer.set_result(message)

    channel.send("ping")
    return await asyncio.wait_for(answer, CONNECT_TIMEOUT)


async def assert_relayed_call(server: TurnServer, a_config: RTCConfiguration,
                              b_config: RTCConfiguration) -> None:
    """The two peers connect relay-to-relay through `server` and the data channel works."""
    async with peers(a_config, b_config) as (a, b):
        echo_channels(b)
        channel = a.createDataChannel("ping")
        await negotiate(a, b)
        for pc in (a, b):
            assert pc.localDescription is not None
            found = candidates(pc.localDescription.sdp)
            assert found, "no local candidate"
            assert {kind for kind, _ in found} == {"relay"}, found
            # Relayed by our coturn: its relay ports, not some other server's.
            assert all(server.min_port <= port <= server.max_port for _, port in found), found
        await until(lambda: a.connectionState == b.connectionState == "connected",
                    CONNECT_TIMEOUT, "both peers connected")
        assert selected_pair(a) == selected_pair(b) == ("relay", "relay")
        assert await ping(channel) == "pong ping"


async def test_minted_credentials_relay_only(turn_server: TurnServer) -> None:
    expiry = int(time.time()) + 300
    configs = []
    for _ in range(2):
        username, credential = turn.mint(turn_server.secret, opaque_id(), expiry)
        configs.append((username, relay_only(turn_server.url, username, credential)))
    await assert_relayed_call(turn_server, configs[0][1], configs[1][1])
    for username, _ in configs:
        turn_server.log_line(f"user <{username}>", "ALLOCATE processed, success")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_configuration_urls_relay(turn_server: TurnServer, transport: str) -> None:
    """What rtcConfiguration hands out works as is, over either transport to coturn (aiortc
    uses only the first TURN url of a server, hence one url each)."""
    def relay_config() -> RTCConfiguration:
        ice = turn.configuration(stun=[], turn_url=turn_server.url, turns_url=None,
                                 secret=turn_server.secret, ttl=300,
                                 now=datetime.now(UTC), with_turn=True)
        (server,) = ice.servers
        (url,) = [url for url in server.urls if url.endswith(f"transport={transport}")]
        assert server.username is not None and server.credential is not None
        return relay_only(url, server.username, server.credential)

    await assert_relayed_call(turn_server, relay_config(), relay_config())


def wrong_credential(secret: str, username_id: str) -> tuple[str, str]:
    username, _ = turn.mint(secret, username_id, int(time.time()) + 300)
    return username, base64.b64encode(secrets.token_bytes(20)).decode()


def expired(secret: str, username_id: str) -> tuple[str, str]:
    return turn.mint(secret, username_id, int(time.time()) - 60)


def other_secret(secret: str, username_id: str) -> tuple[str, str]:
    return turn.mint(secrets.token_hex(16), username_id, int(time.time()) + 300)


@pytest.mark.parametrize("refused_role", ["offerer", "answerer"])
@pytest.mark.parametrize("minted", [wrong_credential, expired, other_secret],
                         ids=["wrong-credential", "expired", "other-secret"])
async def test_refused_credentials_yield_no_relay(
        turn_server: TurnServer, minted: Callable[[str, str], tuple[str, str]],
        refused_role: str) -> None:
    """One peer holds a refused credential, the other a valid one: the refused peer gets no
    relay candidate and stays "new", and the call never connects. Measured on the other side:
    a valid offerer goes to "failed" at once (no remote candidate); a valid answerer stays
    "new" and never even allocates (aioice drops the component the offer had no candidate
    for before gathering), so the refused credential must be the one coturn saw."""
    username, credential = minted(turn_server.secret, opaque_id())
    refused = relay_only(turn_server.url, username, credential)
    valid = relay_only(turn_server.url, *turn.mint(turn_server.secret, opaque_id(),
                                                   int(time.time()) + 300))
    configs = (refused, valid) if refused_role == "offerer" else (valid, refused)
    async with peers(*configs) as (a, b):
        states: list[str] = []
        for pc in (a, b):
            pc.on("connectionstatechange", lambda pc=pc: states.append(pc.connectionState))
        a.createDataChannel("ping")
        # Gathering gives up on coturn's second 401 (a few ms here; on a loaded machine a lost
        # datagram can hold it to aioice's 5 s timeout, so no time is asserted): that coturn
        # refused this username is checked in its log below.
        await negotiate(a, b)
        refused_pc = a if refused_role == "offerer" else b
        assert refused_pc.localDescription is not None
        assert candidates(refused_pc.localDescription.sdp) == []
        await asyncio.sleep(HOLD)
        assert refused_pc.connectionState == "new"
        assert "connected" not in states, states
    turn_server.log_line(f"user <{username}>", "processed, error 401: Unauthorized")
    assert not [line for line in turn_server.log_text().splitlines()
                if f"user <{username}>" in line and "success" in line]


def expected_credential(secret: str, username: str) -> str:
    """draft-uberti-behave-turn-rest: base64(HMAC-SHA1(secret, username)), computed here
    independently of rtc.turn."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def test_configuration_turn_credentials() -> None:
    stun = ["stun:stun.example.org:3478"]
    ice = turn.configuration(stun=stun, turn_url="turn:turn.example.org:3478",
                             turns_url="turns:turn.example.org:5349?transport=tcp",
                             secret="s3cret", ttl=3600, now=NOW, with_turn=True)
    assert ice.expires_at == NOW + timedelta(seconds=3600)
    stun_server, turn_server = ice.servers
    assert stun_server == turn.IceServer(urls=tuple(stun))
    assert turn_server.urls == ("turn:turn.example.org:3478?transport=udp",
                                "turn:turn.example.org:3478?transport=tcp",
                                "turns:turn.example.org:5349?transport=tcp")
    assert turn_server.username is not None
    # Nothing but the expiry and 16 random hex digits: coturn logs usernames, so no user id
    # or name may ever end up there (configuration() is not even given one).
    match = USERNAME.fullmatch(turn_server.username)
    assert match is not None, turn_server.username
    assert int(match[1]) == int(ice.expires_at.timestamp())
    assert turn_server.credential == expected_credential("s3cret", turn_server.username)


def test_each_minting_has_a_new_opaque_id() -> None:
    def username() -> str | None:
        ice = turn.configuration(stun=[], turn_url="turn:t.example:3478", turns_url=None,
                                 secret="s", ttl=60, now=NOW, with_turn=True)
        return ice.servers[0].username

    names = {username() for _ in range(20)}
    assert len(names) == 20


def test_turns_url_is_optional_and_transport_urls_kept() -> None:
    ice = turn.configuration(stun=[], turn_url="turn:t.example:3478?transport=tcp",
                             turns_url=None, secret="s", ttl=60, now=NOW, with_turn=True)
    assert [server.urls for server in ice.servers] == [("turn:t.example:3478?transport=tcp",)]


@pytest.mark.parametrize(("secret", "turn_url", "with_turn"), [
    (None, "turn:t.example:3478", True),   # no TURN_SECRET configured
    ("s", None, True),                     # no TURN url configured
    ("s", "turn:t.example:3478", False),   # caller not allowed to relay (no roomId)
])
def test_stun_only(secret: str | None, turn_url: str | None, with_turn: bool) -> None:
    ice = turn.configuration(stun=["stun:s.example:3478"], turn_url=turn_url, turns_url=None,
                             secret=secret, ttl=600, now=NOW, with_turn=with_turn)
    assert ice.servers == (turn.IceServer(urls=("stun:s.example:3478",)),)
    assert ice.expires_at == NOW + timedelta(seconds=600)

"""What one WebSocket may do: its close codes, and the per-socket message rate.

Close codes (README "Limits"), chosen for what graphql-ws clients then do by themselves:
- 4430 too many connections for this user (WS_MAX_CONNECTIONS). 4429 is graphql-transport-ws's
  own (a second connection_init); 4430 is the next free code of its HTTP-like 44xx block, and
  like every 44xx code but the protocol's fatal ones, graphql-ws retries it with back-off:
  the socket is admitted once another of the user's closes.
- 1008 (policy violation) more messages than WS_MESSAGE_RATE/WS_MESSAGE_BURST allow: a client
  looping on sends; graphql-ws treats 1008 as fatal, so it does not reconnect into the loop.
- 1009 (message too big) a message over WS_MAX_MESSAGE_BYTES, closed by uvicorn itself
  (transport/uvicorn_adapter.py uvicorn_ws_options) before the message is buffered whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

CLOSE_TOO_MANY_CONNECTIONS = 4430
CLOSE_TOO_MANY_MESSAGES = 1008
CLOSE_MESSAGE_TOO_BIG = 1009  # uvicorn's (websockets') own, listed for the README


@dataclass(frozen=True, slots=True)
class SocketLimits:
    max_subscriptions: int = 100  # operations running at once on one socket
    message_rate: float = 20.0  # messages per second, sustained
    message_burst: int = 100  # messages at once
    timeout: float = 30.0  # seconds a query or mutation over the socket may run


class TokenBucket:
    """`burst` messages at once, refilled at `rate` per second. One per socket: slotted."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def wait(self) -> float:
        """Seconds until the next token (after a refused take)."""
        return max(0.0, (1 - self.tokens) / self.rate)

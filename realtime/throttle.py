"""Typing announcements at most once a second per (room, user), in memory bounded by the
number of people who typed in the last second."""

from __future__ import annotations

import time
from collections import OrderedDict


class TypingThrottle:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        # Oldest announcement first: entries are moved to the end when renewed, so expired
        # ones are always at the front.
        self._sent: OrderedDict[tuple[str, str], float] = OrderedDict()

    def should_announce(self, room_id: str, user_id: str, typing: bool) -> bool:
        """False for a refresh within `interval` of the last announcement (the stream's own
        expiry is seconds away); stopping is always announced."""
        now = time.monotonic()
        self._prune(now)
        key = (room_id, user_id)
        if not typing:
            self.forget(room_id, user_id)
            return True
        if key in self._sent:
            return False
        self._sent[key] = now
        return True

    def forget(self, room_id: str, user_id: str) -> None:
        """The stream ended this user's typing by itself (they posted): the next start is
        news, not a refresh."""
        self._sent.pop((room_id, user_id), None)

    def _prune(self, now: float) -> None:
        while self._sent:
            key, at = next(iter(self._sent.items()))
            if now - at < self.interval:
                return
            del self._sent[key]

    def size(self) -> int:
        """Entries still within their interval (the rest are dropped now)."""
        self._prune(time.monotonic())
        return len(self._sent)

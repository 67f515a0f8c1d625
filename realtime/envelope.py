"""What travels over pub/sub: a compact description of one room event (never a payload
rendered for a particular client; each process renders once per room for its own sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from graph_db.events import EventRecord, EventType


@dataclass(frozen=True, slots=True)
class Envelope:
    event: EventRecord
    # Ephemeral events carry their state here (typing, online, expiresAt); seq is 0.
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def durable(self) -> bool:
        return self.event.seq > 0

    def encode(self) -> bytes:
        e = self.event
        return orjson.dumps({
            "r": e.room_id, "s": e.seq, "t": e.type.value, "at": e.at_ms, "m": e.message_id,
            "u": e.user_id, "q": e.request_id, "d": self.data,
        })

    @classmethod
    def decode(cls, raw: bytes | str) -> Envelope:
        d = orjson.loads(raw)
        event = EventRecord(room_id=d["r"], seq=int(d["s"]), type=EventType(d["t"]),
                            at_ms=int(d["at"]), message_id=d.get("m"), user_id=d.get("u"),
                            request_id=d.get("q"))
        return cls(event=event, data=d.get("d") or {})


def channel_for(room_id: str) -> str:
    return f"collab:room:{room_id}"

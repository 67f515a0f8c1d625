"""The audit trail as administrators read it (README "Audit trail"); nothing writes it here."""

from __future__ import annotations

from datetime import datetime
from typing import Self

import orjson
import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from graph_db.audit import AuditQuery as Query
from graph_db.audit import AuditRecord, Outcome
from graph_db.models import Role
from resolvers import audit as resolve
from resolvers.context import Context
from resolvers.pagination import Page
from schema.common import PageInfo

strawberry.enum(Outcome, name="AuditOutcome",  # registers the domain's enum in place
                description="allowed; denied with the caller's code; failed")


@strawberry.type(description="One entry of the audit trail: ids, never content.")
class AuditEvent:
    id: strawberry.ID
    at: datetime
    action: str = strawberry.field(description=(
        "query.<field>, mutation.<field>, read.<Type>.<field>, session.start, "
        "subscription.start, subscription.end"))
    outcome: Outcome
    code: str | None = strawberry.field(description="The code the caller got, when refused "
                                                    "or failed.")
    actor_id: strawberry.ID | None = strawberry.field(description="Null: not signed in.")
    actor_role: Role | None
    object_type: str | None = strawberry.field(description=(
        "Room, Message, User, Participant (its id is the user's), JoinRequest, Session (its "
        "id is the token's fingerprint), AuditEvent"))
    object_id: strawberry.ID | None
    room_id: strawberry.ID | None
    request_id: str | None = strawberry.field(description=(
        "X-Request-ID when the caller sent one, else ours; a WebSocket's is its connection's"))
    client_address: str | None
    user_agent: str | None
    details: JSON | None = strawberry.field(description=(
        "More about the action, ids and figures only (assistant.call: model, message ids "
        "sent, redaction counts, tokens, latencies, outcome)."))

    @classmethod
    def of(cls, r: AuditRecord) -> Self:
        return cls(id=strawberry.ID(r.id), at=r.at, action=r.action, outcome=r.outcome,
                   code=r.code, actor_id=_id(r.actor_id),
                   actor_role=Role(r.actor_role) if r.actor_role else None,
                   object_type=r.object_type, object_id=_id(r.object_id), room_id=_id(r.room_id),
                   request_id=r.request_id, client_address=r.client_address,
                   user_agent=r.user_agent,
                   details=orjson.loads(r.details) if r.details else None)


def _id(value: str | None) -> strawberry.ID | None:
    return strawberry.ID(value) if value is not None else None


@strawberry.type
class AuditEventEdge:
    cursor: str
    node: AuditEvent


@strawberry.type
class AuditEventConnection:
    edges: list[AuditEventEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page[AuditRecord]) -> Self:
        return cls(edges=[AuditEventEdge(cursor=c, node=AuditEvent.of(r))
                          for r, c in zip(page.items, page.cursors, strict=True)],
                   page_info=PageInfo.of(page))


@strawberry.input(description="Every given field must match; `to` is exclusive.")
class AuditFilter:
    actor_id: strawberry.ID | None = None
    room_id: strawberry.ID | None = None
    action: str | None = None
    outcome: Outcome | None = None
    from_: datetime | None = strawberry.field(default=None, name="from")
    to: datetime | None = None

    def query(self) -> Query:
        return Query(
            actor_id=str(self.actor_id) if self.actor_id else None,
            room_id=str(self.room_id) if self.room_id else None, action=self.action,
            outcome=self.outcome, from_ms=resolve.epoch_ms(self.from_, "filter.from"),
            to_ms=resolve.epoch_ms(self.to, "filter.to"))


@strawberry.type
class AuditQuery:
    @strawberry.field(description="Administrators only (FORBIDDEN otherwise); newest first.",
                      extensions=resolve.audited("AuditEvent"))
    async def audit_events(self, info: Info[Context, None], filter: AuditFilter | None = None,
                           first: int | None = 50, after: str | None = None
                           ) -> AuditEventConnection:
        query = (filter or AuditFilter()).query()
        return AuditEventConnection.of(
            await resolve.audit_events(info.context, query, first=first, after=after))

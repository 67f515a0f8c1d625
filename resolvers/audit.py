"""What goes into the audit trail (README "Audit trail"), and the auditors' query.

- Every audited root field (`audited(...)` on its schema field; tests/test_audit.py checks
  that each root field is audited or exempt) gives one record: `query.room`,
  `mutation.sendMessage`, ..., allowed, or denied with the code the caller got. A lookup that
  answers null (`room(id:)` of a room the caller may not see) is a denial: NOT_FOUND.
- Content read inside an operation (a room's messages, participants, join requests, a
  thread's replies) gives `read.Room.messages`, ... one per room and field.
- `session.start` the first time a token is used, `subscription.start`/`subscription.end`
  for each roomEvents subscription (not one per delivered event).
Records carry ids only: never message content, never a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import FieldExtension
from strawberry.extensions.field_extension import AsyncExtensionResolver
from strawberry.types import Info

from auth import Claims
from auth.tokens import session_of
from graph_db import audit as audit_db
from graph_db.audit import AuditQuery, AuditRecord, Outcome, record_id
from graph_db.models import Role, now_ms
from resolvers import pagination
from resolvers.context import Context, Viewer
from resolvers.errors import BadInput, Forbidden, masked

# Codes that mean the service failed rather than refused the caller.
FAILED_CODES = frozenset({"SERVICE_UNAVAILABLE", "INTERNAL_SERVER_ERROR", "REQUEST_TIMEOUT"})
USER_AGENT_MAX = 256
# A refused token is recorded once per this period (a client retrying it is not a flood).
REFUSED_SESSION_KEPT = timedelta(hours=1)
ID_MAX = 128  # longer ids are refused anyway (resolvers/access.py): kept short in the trail


@dataclass
class _Scope:
    """The room an audited root field turned out to concern (noted by the access helpers:
    `editMessage(id:)` names a message, the record names its room too)."""

    room_id: str | None = None


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("audit_scope",
                                                                       default=None)


def note_room(room_id: str) -> None:
    scope = _scope.get()
    if scope is not None and scope.room_id is None:
        scope.room_id = room_id


def record(ctx: Context, action: str, outcome: Outcome, *, object_type: str | None = None,
           object_id: str | None = None, room_id: str | None = None,
           code: str | None = None) -> None:
    trail = ctx.services.audit
    if not trail.enabled:
        return
    viewer = ctx.auth if isinstance(ctx.auth, Viewer) else None
    at_ms = now_ms()
    request = ctx.request
    client = request.client if request is not None else None
    agent = request.headers.get("user-agent") if request is not None else None
    trail.record(AuditRecord(
        id=record_id(at_ms), at_ms=at_ms, action=action, outcome=outcome,
        actor_id=viewer.id if viewer else None,
        actor_role=viewer.role.value if viewer else None,
        object_type=object_type, object_id=object_id[:ID_MAX] if object_id else None,
        room_id=room_id[:ID_MAX] if room_id else None, code=code,
        request_id=ctx.request_id, client_address=client.host if client else None,
        user_agent=agent[:USER_AGENT_MAX] if agent else None))


def outcome_of(exc: BaseException) -> tuple[Outcome, str | None]:
    """How an exception ends an operation, as the caller is told (resolvers/errors.masked)."""
    if isinstance(exc, asyncio.CancelledError):
        return Outcome.FAILED, None  # a timeout or the caller left: effect unknown
    if isinstance(exc, GraphQLError):
        code = (exc.extensions or {}).get("code")
        code = code if isinstance(code, str) else "INTERNAL_SERVER_ERROR"
        return (Outcome.FAILED if code in FAILED_CODES else Outcome.DENIED), code
    return Outcome.FAILED, masked(exc, "").code  # the code the caller is given


@dataclass(frozen=True, slots=True)
class Subject:
    """What an audited root field is about. `by` and `room`: the Python names of the
    arguments holding the object's and the room's ids; `created`: the object is the new one
    the field returns (createRoom, sendMessage); `lookup`: a null answer is NOT_FOUND."""

    object_type: str
    by: str | None = None
    room: str | None = None
    created: bool = False
    lookup: bool = False


class Audited(FieldExtension):
    def __init__(self, subject: Subject) -> None:
        self.subject = subject

    async def resolve_async(self, next_: AsyncExtensionResolver, source: Any,
                            info: Info[Context, None], **kwargs: Any) -> Any:
        subject = self.subject
        room = kwargs.get(subject.room) if subject.room else None
        scope = _Scope(room_id=str(room) if room is not None else None)
        token = _scope.set(scope)
        outcome, code, result = Outcome.ALLOWED, None, None
        try:
            result = await next_(source, info, **kwargs)
        except BaseException as exc:
            outcome, code = outcome_of(exc)
            raise
        finally:
            _scope.reset(token)
            if result is None and subject.lookup and outcome is Outcome.ALLOWED:
                outcome, code = Outcome.DENIED, "NOT_FOUND"
            self._record(info, kwargs, result, scope, outcome, code)
        return result

    def _record(self, info: Info[Context, None], kwargs: dict[str, Any], result: Any,
                scope: _Scope, outcome: Outcome, code: str | None) -> None:
        subject = self.subject
        object_id = kwargs.get(subject.by) if subject.by else None
        if subject.created and result is not None:
            object_id = getattr(result, "id", None)
        # A room's own operations concern that room; others, the one access found.
        room_id = (str(object_id) if subject.object_type == "Room" and object_id is not None
                   else scope.room_id)
        record(info.context, f"{info.operation.operation.value}.{info.field_name}", outcome,
               object_type=subject.object_type,
               object_id=str(object_id) if object_id is not None else None,
               room_id=room_id, code=code)


def audited(object_type: str, **subject: Any) -> list[FieldExtension]:
    """The `extensions` of an audited root field."""
    return [Audited(Subject(object_type, **subject))]


def read(ctx: Context, what: str, room_id: str, *, allowed: bool = True) -> None:
    """Content of a room read inside an operation: `what` is Type.field (Room.messages).
    Not allowed: the caller got an empty list instead (a visitor of a PUBLIC room), which
    the trail records as a denial (FORBIDDEN) though the caller saw no error."""
    record(ctx, f"read.{what}", Outcome.ALLOWED if allowed else Outcome.DENIED,
           object_type="Room", object_id=room_id, room_id=room_id,
           code=None if allowed else "FORBIDDEN")


async def session_started(ctx: Context, claims: Claims) -> None:
    """A token's first use (per the session ledger): `session.start`."""
    if claims.session and await ctx.services.sessions.first_use(claims.session,
                                                                claims.expires_at):
        record(ctx, "session.start", Outcome.ALLOWED, object_type="Session",
               object_id=claims.session)


async def session_refused(ctx: Context, header: str | None) -> None:
    """A token that does not verify (bad signature, expired, malformed): `session.start`
    denied UNAUTHENTICATED, once per token like a session's start."""
    if not header:
        return
    session = session_of(header.split()[-1])
    if await ctx.services.sessions.first_use(session, datetime.now(UTC) + REFUSED_SESSION_KEPT):
        record(ctx, "session.start", Outcome.DENIED, object_type="Session", object_id=session,
               code="UNAUTHENTICATED")


def subscription(ctx: Context, event: str, room_id: str, outcome: Outcome = Outcome.ALLOWED,
                 code: str | None = None) -> None:
    """`subscription.start` (allowed or refused) and `subscription.end` of roomEvents."""
    record(ctx, f"subscription.{event}", outcome, object_type="Room", object_id=room_id,
           room_id=room_id, code=code)


@dataclass
class Ending:
    """Why the stream ended a subscription (FORBIDDEN: removed from the room), if it did."""

    code: str | None = None


@contextlib.contextmanager
def subscription_span(ctx: Context, room_id: str) -> Iterator[Ending]:
    """Around a started subscription: `subscription.end` however it ends. The client's
    `complete`, a closed socket or a closed room end it as allowed; the stream's own end
    code (or a failure) as denied or failed."""
    ending = Ending()
    outcome, code = Outcome.ALLOWED, None
    try:
        yield ending
    except BaseException as exc:
        outcome, code = outcome_of(exc)
        if isinstance(exc, asyncio.CancelledError):
            code = ending.code
            outcome = (Outcome.ALLOWED if code is None else
                       Outcome.FAILED if code in FAILED_CODES else Outcome.DENIED)
        raise
    finally:
        subscription(ctx, "end", room_id, outcome, code)


# -- the auditors' query -------------------------------------------------------------------

async def audit_events(ctx: Context, query: AuditQuery, *, first: int | None,
                       after: str | None) -> pagination.Page[AuditRecord]:
    if ctx.viewer.role is not Role.ADMIN:
        raise Forbidden("only administrators read the audit trail")
    limit = pagination.page_size(first, default=50)
    if query.from_ms is not None and query.to_ms is not None and query.from_ms > query.to_ms:
        raise BadInput("filter.from", "must not be after filter.to")
    fp = pagination.fingerprint(query.actor_id, query.room_id, query.action,
                                query.outcome.value if query.outcome else None,
                                query.from_ms, query.to_ms)
    keys = pagination.decode("audit", fp, after)
    if keys is not None and not (len(keys) == 2 and isinstance(keys[0], int)
                                 and isinstance(keys[1], str)):
        raise BadInput("after", "malformed cursor")
    found = await audit_db.page(ctx.db, query, after=(keys[0], keys[1]) if keys else None,
                                limit=limit + 1)
    return pagination.forward(found, limit, after,
                              lambda e: pagination.encode("audit", fp, e.at_ms, e.id))


def epoch_ms(value: datetime | None, field: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise BadInput(field, "must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
    return int(value.timestamp() * 1000)

"""The typed per-request (HTTP) or per-connection (WebSocket) context, and the services."""

from __future__ import annotations

import contextvars
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.websockets import WebSocket

from audit import AuditTrail, SessionLedger
from auth import AuthError, Claims, TokenVerifier
from graph_db import users
from graph_db.driver import DatabaseUnavailable, GraphDB
from graph_db.events import EventRecord
from graph_db.group_commit import GroupCommit
from graph_db.models import Role, UserRecord
from loaders import Loaders
from realtime.hub import Hub
from realtime.throttle import TypingThrottle
from resolvers.errors import UNAVAILABLE_MESSAGE, Unauthenticated, Unavailable
from settings import Settings

if TYPE_CHECKING:
    from assistant.service import Assistant
    from files.links import Links
    from files.service import FileService
    from notify.digests import Digests
    from notify.inbox import Inbox
    from rtc import Rtc

_KNOWN_USERS_MAX = 10_000
_operation_loaders: contextvars.ContextVar[Loaders | None] = contextvars.ContextVar(
    "operation_loaders", default=None)


@dataclass(frozen=True, slots=True)
class Viewer:
    user: UserRecord
    claims: Claims

    @property
    def id(self) -> str:
        return self.user.id

    @property
    def role(self) -> Role:
        return self.user.role


@dataclass
class Services:
    """What the app builds once in its lifespan and every operation shares."""

    settings: Settings
    db: GraphDB
    verifier: TokenVerifier
    hub: Hub
    audit: AuditTrail
    sessions: SessionLedger  # which tokens were used before (audit: session.start)
    sends: GroupCommit  # sendMessage's writes, a room's concurrent sends together
    rtc: Rtc  # calls: state, signals, screen shares, recordings
    inbox: Inbox  # in-app notifications
    files: FileService  # uploads: checks, scanning, encrypted storage
    links: Links  # signed download URLs
    digests: Digests  # email digests for people who are not online
    # The assistant; None when ENABLE_AI_ASSISTANT is off.
    assistant: Assistant | None = None
    # Typing refreshes within a second of the last announcement are dropped.
    typing: TypingThrottle = field(default_factory=TypingThrottle)
    # Users whose current claims this process already wrote: skips a write per request.
    _known: OrderedDict[str, UserRecord] = field(default_factory=OrderedDict)

    async def viewer_for(self, claims: Claims) -> Viewer:
        """The user of verified claims, created or updated from them."""
        role = claims.role
        user = self._known.get(claims.user_id)
        if user is None or (user.display_name, user.role, user.email) != (
                claims.display_name, role, claims.email):
            user = await users.upsert_user(self.db, user_id=claims.user_id,
                                           name=claims.display_name, role=role,
                                           email=claims.email)
        self._known[claims.user_id] = user
        self._known.move_to_end(claims.user_id)
        if len(self._known) > _KNOWN_USERS_MAX:
            self._known.popitem(last=False)
        return Viewer(user=user, claims=claims)


@dataclass
class Context:
    services: Services
    request: Request | WebSocket | None
    response: Any = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    auth: Viewer | AuthError | DatabaseUnavailable | None = None
    # Set by strawberry from the WebSocket connection_init payload; dropped once the socket is
    # initialised (transport/ws.py: it holds the token, for as long as the socket is open).
    connection_params: dict[str, Any] | None = None
    # A socket's token as verified for WS_MAX_CONNECTIONS before the ack: not verified twice.
    claims: Claims | None = None

    @property
    def db(self) -> GraphDB:
        return self.services.db

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def viewer(self) -> Viewer:
        if isinstance(self.auth, Viewer):
            return self.auth
        if isinstance(self.auth, AuthError):
            raise Unauthenticated(str(self.auth))
        if isinstance(self.auth, DatabaseUnavailable):
            raise Unavailable(UNAVAILABLE_MESSAGE)
        raise Unauthenticated("authentication required")

    @property
    def loaders(self) -> Loaders:
        """This operation's loaders. A WebSocket connection runs many operations, each in its
        own task, so they live in a context variable set when the operation starts."""
        loaders = _operation_loaders.get()
        if loaders is None:  # outside an operation (tests, reference resolution)
            loaders = self.new_loaders()
            _operation_loaders.set(loaders)
        return loaders

    async def announce(self, events: list[EventRecord]) -> None:
        """After a committed write: publish its events; later reads see fresh state."""
        for event in events:
            await self.services.hub.publish(event)
        await self.services.rtc.calls.room_changed(events)
        if self.services.assistant is not None:
            await self.services.assistant.room_changed(events)
        if isinstance(self.auth, Viewer):
            self.services.inbox.room_events(events, self.auth.id)
        self.loaders.clear_all()

    def new_loaders(self) -> Loaders:
        viewer = self.auth if isinstance(self.auth, Viewer) else None
        loaders = Loaders(self.services.db, viewer.id if viewer else None,
                          self.services.hub.presence, self.services.rtc.calls.states)
        if viewer is not None:
            loaders.user.prime(viewer.id, viewer.user)  # fresh from the token's upsert
        return loaders

    def start_operation(self) -> contextvars.Token[Loaders | None]:
        # Set in the operation's own task, before graphql-core fans out into child tasks
        # (which copy the context: a loader created there would batch nothing).
        return _operation_loaders.set(self.new_loaders())

    @staticmethod
    def end_operation(token: contextvars.Token[Loaders | None]) -> None:
        _operation_loaders.reset(token)

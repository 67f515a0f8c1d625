"""The Strawberry schema: types in this package, behaviour in resolvers/.

Each domain module contributes its own Query/Mutation/Subscription classes; they are merged
here into the root types."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import strawberry
from graphql import GraphQLError, GraphQLUnionType
from strawberry.extensions import SchemaExtension
from strawberry.federation.schema import FederationAny
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, Info

from resolvers import validation
from resolvers.errors import BadInput
from schema.assistant import AssistantMutation, AssistantQuery
from schema.audit import AuditQuery
from schema.call_ops import CallMutation, CallQuery, CallSubscription
from schema.events import EVENT_TYPES, RoomEventsSubscription, TypingMutation
from schema.files import FileMutation
from schema.messages import MessageMutation, MessageQuery
from schema.notifications import (
    NotificationMutation,
    NotificationQuery,
    NotificationSettingsMutation,
    NotificationSettingsQuery,
    NotificationSubscription,
)
from schema.room_ops import RoomMutation, RoomQuery

log = logging.getLogger("collaboration.graphql")

QUERIES: tuple[type, ...] = (RoomQuery, MessageQuery, AuditQuery, CallQuery, NotificationQuery,
                             NotificationSettingsQuery, AssistantQuery)
MUTATIONS: tuple[type, ...] = (RoomMutation, MessageMutation, TypingMutation, CallMutation,
                               NotificationMutation, FileMutation,
                               NotificationSettingsMutation, AssistantMutation)
SUBSCRIPTIONS: tuple[type, ...] = (RoomEventsSubscription, CallSubscription,
                                   NotificationSubscription)

Query = merge_types("Query", QUERIES)
Mutation = merge_types("Mutation", MUTATIONS)
Subscription = merge_types("Subscription", SUBSCRIPTIONS)


class CollaborationSchema(strawberry.federation.Schema):
    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        """Client mistakes are not server errors: strawberry would log each with a traceback.
        Unexpected failures are logged once, with a request id, by CodedErrors."""
        for error in errors:
            log.debug("graphql error: %s", error.message)

    def entities_resolver(self, info: Info, representations: list[FederationAny]
                          ) -> list[FederationAny]:
        """strawberry's, given only well-formed representations: another value (a string, no
        `__typename` of an entity, no string `id`) is a BAD_USER_INPUT at its position, not
        an unexpected failure of the whole field (tests/test_fuzz.py found that)."""
        entity = self._schema.get_type("_Entity")
        names = frozenset(t.name for t in entity.types) if isinstance(
            entity, GraphQLUnionType) else frozenset()
        refused: list[BadInput | None] = []
        for index, value in enumerate(representations):
            try:
                validation.representation(index, value, names)
            except BadInput as error:
                refused.append(error)
            else:
                refused.append(None)
        fine = [r for r, error in zip(representations, refused, strict=True) if error is None]
        resolved = iter(super().entities_resolver(info, fine))
        return [error if error is not None else next(resolved)  # type: ignore[misc]
                for error in refused]


def build_schema(extensions: Sequence[type[SchemaExtension] | Callable[[], SchemaExtension]] = (),
                 ) -> strawberry.federation.Schema:
    return CollaborationSchema(
        query=Query, mutation=Mutation, subscription=Subscription, types=EVENT_TYPES,
        extensions=list(extensions), federation_version="2.7",
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"


__all__ = ["build_schema", "export_sdl"]

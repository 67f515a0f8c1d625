"""User: a person known from a token of the main application."""

from __future__ import annotations

from typing import Self

import strawberry
from strawberry.types import Info

from graph_db.models import UserRecord
from resolvers import users as resolve
from resolvers.context import Context
from resolvers.pagination import Page
from schema.common import PageInfo
from schema.enums import Role


@strawberry.federation.type(keys=["id"])
class User:
    id: strawberry.ID
    display_name: str
    role: Role

    @classmethod
    def of(cls, record: UserRecord) -> Self:
        return cls(id=strawberry.ID(record.id), display_name=record.display_name,
                   role=record.role)

    @strawberry.field(description="Connected to any room right now.")
    async def online(self, info: Info[Context, None]) -> bool:
        return await info.context.loaders.online_user.load(str(self.id))

    @classmethod
    async def resolve_reference(cls, info: Info[Context, None], id: strawberry.ID
                                ) -> Self | None:
        found = await resolve.user(info.context, id)
        return cls.of(found) if found else None


@strawberry.type
class UserEdge:
    cursor: str
    node: User


@strawberry.type
class UserConnection:
    edges: list[UserEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: Page[UserRecord]) -> Self:
        return cls(
            edges=[UserEdge(cursor=c, node=User.of(u)) for u, c in zip(page.items, page.cursors,
                                                                       strict=True)],
            page_info=PageInfo.of(page),
        )

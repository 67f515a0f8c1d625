"""User queries: the caller, one user, and search."""

from __future__ import annotations

from typing import Any

from graph_db import users
from graph_db.models import Role, UserRecord
from resolvers import pagination, policy, validation
from resolvers.access import access_user
from resolvers.context import Context
from resolvers.errors import BadInput, NotFound
from resolvers.pagination import Page


async def me(ctx: Context) -> UserRecord:
    return ctx.viewer.user


async def user(ctx: Context, user_id: str) -> UserRecord | None:
    try:
        return await access_user(ctx, user_id)
    except NotFound:
        return None


async def search_users(ctx: Context, *, search: str | None, role: Role | None,
                       first: int | None, after: str | None) -> Page[UserRecord]:
    viewer = ctx.viewer
    limit = pagination.page_size(first)
    term = validation.optional_text("search", search, max_len=120)
    fp = pagination.fingerprint(viewer.id, term, role.value if role else None)
    keys = _user_keys(pagination.decode("users", fp, after))
    found = await users.search_users(
        ctx.db, viewer_id=viewer.id, sees_all=policy.sees_all_users(viewer.role),
        search=term, role=role, after=keys, limit=limit + 1)
    return pagination.forward(found, limit, after,
                              lambda u: pagination.encode("users", fp, u.display_name, u.id))


def _user_keys(keys: list[Any] | None) -> tuple[str, str] | None:
    if keys is None:
        return None
    if len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise BadInput("after", "malformed cursor")
    return keys[0], keys[1]

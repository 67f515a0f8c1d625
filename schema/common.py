"""Types shared by every domain."""

from __future__ import annotations

from typing import Any

import strawberry

from resolvers.pagination import Page


# Shareable: a main application with Relay connections of its own defines the same PageInfo, and
# Federation allows one value type in several subgraphs only when every copy is @shareable.
@strawberry.federation.type(shareable=True)
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def of(cls, page: Page[Any]) -> PageInfo:
        cursors = page.cursors
        return cls(has_next_page=page.has_next, has_previous_page=page.has_previous,
                   start_cursor=cursors[0] if cursors else None,
                   end_cursor=cursors[-1] if cursors else None)

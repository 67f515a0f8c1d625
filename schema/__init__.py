"""The Strawberry schema: types in this package, behaviour in resolvers/."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import strawberry
from strawberry.extensions import SchemaExtension

from schema.root import Mutation, Query


def build_schema(extensions: Sequence[type[SchemaExtension] | Callable[[], SchemaExtension]] = (),
                 ) -> strawberry.federation.Schema:
    return strawberry.federation.Schema(
        query=Query, mutation=Mutation, extensions=list(extensions),
        federation_version="2.7",
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"


__all__ = ["build_schema", "export_sdl"]

"""Small shared helpers for the API tests: registering personas and reading single errors."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.personas import Persona


async def register(*people: Persona) -> None:
    """A user node exists once its token has been seen: one `me` each, concurrently."""
    await asyncio.gather(*(p.gql("{ me { id } }") for p in people))


async def failure(persona: Persona, query: str, **variables: Any) -> dict[str, Any]:
    """The one error an operation fails with (data must not carry a partial result)."""
    body = await persona.post(query, variables)
    errors = body.get("errors") or []
    assert len(errors) == 1, body
    error: dict[str, Any] = errors[0]
    assert "code" in error.get("extensions", {}), error
    return error


async def bad_input(persona: Persona, query: str, field: str | None = None,
                    **variables: Any) -> dict[str, Any]:
    """Asserts BAD_USER_INPUT; with `field`, that our own message names it."""
    error = await failure(persona, query, **variables)
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    if field is not None:
        assert error["message"].startswith(f"{field}:"), error
        assert error["extensions"].get("field") == field, error
    return error

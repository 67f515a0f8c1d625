"""Authentication: bearer JWT verification and development tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graph_db.models import Role

from .tokens import AuthError, Claims, TokenVerifier, parse_bearer

if TYPE_CHECKING:
    from .dev_token import issue_dev_token

__all__ = [
    "AuthError",
    "Claims",
    "Role",
    "TokenVerifier",
    "issue_dev_token",
    "parse_bearer",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: an eager import makes `python -m auth.dev_token` warn that the module
    # was already in sys.modules before runpy executed it.
    if name == "issue_dev_token":
        from .dev_token import issue_dev_token

        return issue_dev_token
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

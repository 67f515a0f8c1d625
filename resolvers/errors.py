"""Expected failures, each with the `extensions.code` clients branch on."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError


class ServiceError(GraphQLError):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": self.code, **extensions})


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"


class Forbidden(ServiceError):
    code = "FORBIDDEN"


class NotFound(ServiceError):
    """Also what callers get for objects they may not see, so ids cannot be probed."""

    code = "NOT_FOUND"

    def __init__(self, kind: str) -> None:
        super().__init__(f"{kind} not found")


class BadInput(ServiceError):
    code = "BAD_USER_INPUT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field)


class Conflict(ServiceError):
    code = "CONFLICT"


class ResyncRequired(ServiceError):
    """A stream cursor older than the event log keeps: refetch, then subscribe afresh."""

    code = "RESYNC_REQUIRED"

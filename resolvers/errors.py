"""Expected failures, each with the `extensions.code` clients branch on."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from graph_db.driver import DatabaseUnavailable


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

    def __init__(self, field: str, problem: str, **extensions: Any) -> None:
        super().__init__(f"{field}: {problem}", field=field, **extensions)


class Conflict(ServiceError):
    code = "CONFLICT"


class ResyncRequired(ServiceError):
    """A stream cursor older than the event log keeps: refetch, then subscribe afresh."""

    code = "RESYNC_REQUIRED"


class Unavailable(ServiceError):
    """A backing service (the graph database) cannot be reached: retry shortly."""

    code = "SERVICE_UNAVAILABLE"


class NotInCall(ServiceError):
    """The caller (`who: sender`) or the addressee (`who: recipient`) is not in the room's
    call, or not with that session."""

    code = "NOT_IN_CALL"


class PresenterBusy(ServiceError):
    code = "PRESENTER_BUSY"


class VideoLimitReached(ServiceError):
    code = "VIDEO_LIMIT_REACHED"


class FeatureDisabled(ServiceError):
    code = "FEATURE_DISABLED"


class UnsupportedFileType(ServiceError):
    code = "UNSUPPORTED_FILE_TYPE"


class Infected(ServiceError):
    code = "INFECTED"


# The assistant (README "Assistant"): refusals of askAssistant, and the `error` of a reply
# that failed after it was accepted (its upstream's failures).
class AIDisabled(ServiceError):
    code = "AI_DISABLED"


class AINotConfigured(ServiceError):
    code = "AI_NOT_CONFIGURED"


class AIModelUnavailable(ServiceError):
    code = "AI_MODEL_UNAVAILABLE"


class AIPhiBlocked(ServiceError):
    code = "AI_PHI_BLOCKED"


class AIRateLimited(ServiceError):
    code = "AI_RATE_LIMITED"


class AIBudgetExceeded(ServiceError):
    code = "AI_BUDGET_EXCEEDED"


class AIUpstreamRateLimited(ServiceError):
    code = "AI_UPSTREAM_RATE_LIMITED"


class AIUpstreamRejected(ServiceError):
    code = "AI_UPSTREAM_REJECTED"


class AIUpstreamError(ServiceError):
    code = "AI_UPSTREAM_ERROR"


class AIUpstreamTimeout(ServiceError):
    code = "AI_UPSTREAM_TIMEOUT"


AI_ERRORS: dict[str, type[ServiceError]] = {cls.code: cls for cls in (
    AIDisabled, AINotConfigured, AIModelUnavailable, AIPhiBlocked, AIRateLimited,
    AIBudgetExceeded, AIUpstreamRateLimited, AIUpstreamRejected, AIUpstreamError,
    AIUpstreamTimeout)}


UNEXPECTED_MESSAGE = "Unexpected error."
UNAVAILABLE_MESSAGE = "The service is temporarily unavailable; retry shortly."


def is_unavailable(exc: BaseException) -> bool:
    """An outage of a backing service rather than a bug: the database did not answer, or
    Redis (presence) refused the connection."""
    return isinstance(exc, (DatabaseUnavailable, RedisConnectionError, RedisTimeoutError))


def masked(exc: BaseException, request_id: str) -> ServiceError:
    """What a client sees of an unexpected failure: a code it can act on and the request id
    that finds the stack trace in the log, never the exception's own text."""
    if is_unavailable(exc):
        return Unavailable(UNAVAILABLE_MESSAGE, requestId=request_id)
    return ServiceError(UNEXPECTED_MESSAGE, requestId=request_id)

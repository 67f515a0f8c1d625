"""Errors of the transport itself (before any resolver runs), each with its client-facing code.

HTTPProblem is a request that is not a well-formed GraphQL-over-HTTP request: it is answered
with its HTTP status and a GraphQL-shaped body, whatever media type was asked for."""

from __future__ import annotations

from resolvers.errors import ServiceError


class BadRequest(ServiceError):
    """Malformed request: bad JSON, wrong parameter types, a bad persisted-query extension."""

    code = "BAD_REQUEST"


class OperationResolutionFailure(ServiceError):
    """The document is fine but names no operation to run (several and no operationName, or
    an operationName it does not contain)."""

    code = "OPERATION_RESOLUTION_FAILURE"


class PersistedQueryNotFound(ServiceError):
    """A hash alone that this service does not know: send it again with the document. The
    message is the one Apollo Client's persisted-queries link retries on."""

    code = "PERSISTED_QUERY_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("PersistedQueryNotFound")


class PersistedQueryNotAllowed(ServiceError):
    """PERSISTED_QUERIES_ONLY: the document is not in the trusted-documents manifest."""

    code = "PERSISTED_QUERY_NOT_ALLOWED"

    def __init__(self) -> None:
        super().__init__("PersistedQueryNotAllowed: this service runs only the operations of "
                         "its persisted-query manifest")


class PayloadTooLarge(ServiceError):
    """A request body over REQUEST_MAX_BYTES (refused as soon as that many bytes came)."""

    code = "PAYLOAD_TOO_LARGE"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the request body is larger than {max_bytes} bytes",
                         maxBytes=max_bytes)


class RequestTimeout(ServiceError):
    """An operation that ran longer than REQUEST_TIMEOUT: stopped, its answer is this."""

    code = "REQUEST_TIMEOUT"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the operation did not finish within {seconds:g} s and was stopped",
                         timeout=seconds)


class HTTPProblem(Exception):
    """Answered with `status` and a GraphQL-shaped body: `error` (BAD_REQUEST by default)."""

    def __init__(self, status: int, message: str = "", *,
                 headers: dict[str, str] | None = None,
                 error: ServiceError | None = None) -> None:
        super().__init__(message or (error.message if error else ""))
        self.status = status
        self.error = error or BadRequest(message)
        self.headers = headers or {}

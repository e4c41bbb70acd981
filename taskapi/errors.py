"""One error type per case, one renderer: every error body is `{"detail", "code"}`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from taskapi.jsonutil import json_response

logger = logging.getLogger("taskapi.errors")


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str
    code: str


class APIError(Exception):
    """Base of the errors the service answers with; subclasses set status and code."""

    status_code = 500
    code = "INTERNAL_ERROR"
    detail = "Internal server error"

    def __init__(self, detail: str | None = None, *, headers: Mapping[str, str] | None = None):
        self.detail = detail or type(self).detail
        self.headers = dict(headers or {})
        super().__init__(self.detail)


class TaskNotFoundError(APIError):
    status_code = 404
    code = "TASK_NOT_FOUND"
    detail = "Task not found or you don't have permission to access it"


class PreconditionFailedError(APIError):
    status_code = 412
    code = "PRECONDITION_FAILED"
    detail = "The task has changed: If-Match does not name its current ETag"


class IdempotencyKeyReusedError(APIError):
    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    detail = "This Idempotency-Key was used with a different request body"


class IdempotencyKeyInUseError(APIError):
    status_code = 409
    code = "IDEMPOTENCY_KEY_IN_USE"
    detail = "A request with this Idempotency-Key is still being processed; retry later"

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class SyncTokenExpiredError(APIError):
    status_code = 410
    code = "SYNC_TOKEN_EXPIRED"
    detail = "The sync token is older than the deletions kept; sync again without `since`"


class AuthenticationError(APIError):
    """A 401; carries `WWW-Authenticate: Bearer` as RFC 6750 asks."""

    status_code = 401
    code = "AUTH_REQUIRED"
    detail = "Authentication required"
    challenge = 'Bearer realm="api"'

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": self.challenge})


class MissingTokenError(AuthenticationError):
    code = "MISSING_TOKEN"
    detail = "No Authorization header provided"


class InvalidAuthHeaderError(AuthenticationError):
    code = "INVALID_AUTH_HEADER"
    detail = "Authorization header must be 'Bearer <token>'"
    challenge = 'Bearer realm="api", error="invalid_request"'


class InvalidTokenError(AuthenticationError):
    code = "INVALID_TOKEN"
    detail = "Token is invalid"
    challenge = 'Bearer realm="api", error="invalid_token"'


class TokenExpiredError(InvalidTokenError):
    code = "TOKEN_EXPIRED"
    detail = "Token has expired"
    challenge = 'Bearer realm="api", error="invalid_token", error_description="token expired"'


class MissingSubClaimError(InvalidTokenError):
    code = "MISSING_SUB_CLAIM"
    detail = "Token has no 'sub' claim"


class UnavailableError(APIError):
    """A 503 with `Retry-After`: a dependency is down, the request can be retried."""

    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    detail = "The service is temporarily unavailable, retry later"

    def __init__(self, detail: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class AuthUnavailableError(UnavailableError):
    code = "AUTH_ERROR"
    detail = "Token verification keys are unavailable, retry later"


class UnsupportedMediaTypeError(APIError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    detail = "Request body must be JSON (Content-Type: application/json)"


class RateLimitedError(APIError):
    status_code = 429
    code = "RATE_LIMITED"
    detail = "Too many requests, slow down"


# Codes for errors raised by the framework rather than by our code.
_HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    431: "HEADERS_TOO_LARGE",
}
_HTTP_DETAILS = {404: "Not found", 405: "Method not allowed"}


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    """Render the one error body."""
    return json_response({"detail": detail, "code": code}, status, headers)


def api_error_response(error: APIError) -> Response:
    """The response for an error the service raised on purpose."""
    return error_response(error.status_code, error.code, error.detail, error.headers)


def exception_response(exc: BaseException) -> Response:
    """The response for any exception: an `APIError`'s own, else a logged 500 whose body
    says nothing about the cause. (A dependency that is down is an `UnavailableError` by
    the time it gets here: `taskapi.db.failures`.)"""
    if isinstance(exc, APIError):
        return api_error_response(exc)
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "Internal server error")


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """A readable detail naming each offending field, e.g. `body.title: ...`."""
    parts = []
    for error in errors[:5]:
        loc = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{loc}: {error.get('msg', 'invalid value')}" if loc else error.get("msg"))
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(str(part) for part in parts) or "Invalid request"


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
READ_ONLY_ROUTE = "read_only"
"""The name of a route that only answers 405 for methods a read-only path does not allow."""


def _flat(routes: Sequence[Any]) -> Iterator[Any]:
    """Routes in the order they match, included routers' routes in their place."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _flat(included.routes)
        else:
            yield route


def allowed_methods(request: Request) -> str:
    """Every method the path answers to (Starlette names only the first matching route's):
    those whose first fully matching route is not a read-only path's 405."""
    allowed = set()
    routes = list(_flat(request.app.router.routes))
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        route = next((r for r in routes if r.matches(scope)[0] == Match.FULL), None)
        if route is not None and getattr(route, "name", None) != READ_ONLY_ROUTE:
            allowed.add(method)
    if "GET" in allowed:
        allowed.add("HEAD")  # the edge answers HEAD wherever GET is answered
    return ", ".join(sorted(allowed))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into `{detail, code}`."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return api_error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "VALIDATION_ERROR", describe_validation_errors(exc.errors()))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code in _HTTP_DETAILS:
            detail = _HTTP_DETAILS[exc.status_code]
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
        return error_response(exc.status_code, code, detail or code, headers)

    async def unhandled(request: Request, exc: Exception) -> Response:
        return exception_response(exc)

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unhandled)

"""One error hierarchy, one body shape: {"error": code, "detail": sentence, "request_id": id}."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

log = structlog.get_logger("app.errors")


class AppError(Exception):
    """Base of every error a client may see. Subclasses fix the status and the code."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_detail: ClassVar[str] = "The server could not complete the request."

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        keep_changes: bool = False,
    ) -> None:
        self.detail = detail or self.default_detail
        # Most errors undo the request's writes; a few record something first (a revoked token family)
        # and ask the unit of work to commit anyway.
        self.keep_changes = keep_changes
        self.headers = dict(headers or {})
        # Machine-readable facts added to the body next to error/detail (e.g. required/available).
        self.extra = dict(extra or {})
        super().__init__(self.detail)


class InternalError(AppError):
    """An unexpected failure: the client learns nothing but the request id to quote."""


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"
    default_detail = "The request is malformed."


class BadSignature(BadRequest):
    """A signed request (a provider's webhook, a client's payment confirmation) whose signature does not
    hold."""

    code = "invalid_signature"
    default_detail = "The webhook signature is missing, wrong or too old."


class Unauthenticated(AppError):
    status_code = 401
    code = "unauthenticated"
    default_detail = "Authentication is required."


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    default_detail = "You are not allowed to do this."


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    default_detail = "The resource does not exist."


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    default_detail = "The request conflicts with the current state."


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    default_detail = "The request body is too large."


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"
    default_detail = "The content type is not supported."


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    default_detail = "Too many requests; retry later."

    def __init__(self, retry_after_seconds: int, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_seconds))})


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    default_detail = "A service this request needs is unavailable; retry later."


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    default_detail = "The database is unavailable; retry later."

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, headers={"Retry-After": "5", **(headers or {})}, extra=extra)


class ProviderNotConfigured(ServiceUnavailable):
    code = "provider_not_configured"
    default_detail = "This feature's provider is not configured on this server."


_STATUS_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is malformed."),
    401: ("unauthenticated", "Authentication is required."),
    403: ("forbidden", "You are not allowed to do this."),
    404: ("not_found", "No resource at this path."),
    405: ("method_not_allowed", "This method is not allowed on this path."),
    406: ("not_acceptable", "No acceptable representation."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "The content type is not supported."),
    429: ("rate_limited", "Too many requests; retry later."),
}


def request_id_of(request: Request) -> str | None:
    request_id = request.scope.get("state", {}).get("request_id")
    return request_id if isinstance(request_id, str) else None


def error_body(code: str, detail: Any, request_id: str | None, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, "request_id": request_id, **extra}


def render_app_error(exc: AppError, request_id: str | None) -> JSONResponse:
    headers = dict(exc.headers)
    if request_id:
        headers["X-Request-ID"] = request_id
    return JSONResponse(
        error_body(exc.code, exc.detail, request_id, **exc.extra),
        status_code=exc.status_code,
        headers=headers,
    )


# PostgreSQL's query_canceled (a statement timeout, a cancel), admin_shutdown, crash_shutdown and
# cannot_connect_now (a server stopping, crashed, or starting again): the database, not the request.
UNAVAILABLE_SQLSTATES = frozenset({"57014", "57P01", "57P02", "57P03"})
# PostgreSQL's serialization_failure and deadlock_detected: the transaction was rolled back because of a
# concurrent one, and may pass if sent again (MySQL's deadlock is an OperationalError, answered alike).
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})


def database_error_as_app_error(exc: Exception) -> AppError | None:
    """Errors that mean "the database is down, stuck or saturated": the client should retry later."""
    if isinstance(exc, PoolTimeoutError | OperationalError | ConnectionError | TimeoutError):
        return DatabaseUnavailable()
    if not isinstance(exc, DBAPIError):
        return None
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if exc.connection_invalidated or sqlstate in UNAVAILABLE_SQLSTATES:
        return DatabaseUnavailable()
    if sqlstate in CONFLICT_SQLSTATES:
        return DatabaseUnavailable("A concurrent request got in the way and nothing was changed; retry.")
    return None


def _jsonable(value: Any) -> Any:
    """`value` if the response can carry it (as JSONResponse encodes: no NaN or infinity, UTF-8, which
    a lone surrogate is not), else its text with whatever cannot be encoded escaped."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    cleaned = []
    for error in errors:
        item = {key: _jsonable(error.get(key)) for key in ("type", "loc", "msg", "input") if key in error}
        if "ctx" in error:
            item["ctx"] = {key: _jsonable(value) for key, value in error["ctx"].items()}
        cleaned.append(item)
    return cleaned


async def _handle_app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return render_app_error(exc, request_id_of(request))


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str | None:
    """Every method some route takes at this path. The router's 405 names only those of the first route
    that matched the path, while a path's methods are often split over several routes (GET, PATCH and
    DELETE /users/me)."""
    routes = getattr(request.app, "routes", ())
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in routes
            if isinstance(route, BaseRoute)
        )
    ]
    return ", ".join(allowed) or None


async def _handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, default_detail = _STATUS_CODES.get(exc.status_code, ("http_error", "The request failed."))
    # Starlette's own raises carry only the status phrase; ours reads better.
    generic = isinstance(exc.detail, str) and exc.detail == HTTPStatus(exc.status_code).phrase
    detail = default_detail if generic or not isinstance(exc.detail, str) else exc.detail
    request_id = request_id_of(request)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = allowed
    if request_id:
        headers["X-Request-ID"] = request_id
    return JSONResponse(error_body(code, detail, request_id), status_code=exc.status_code, headers=headers)


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    request_id = request_id_of(request)
    if any(error.get("type") == "json_invalid" for error in errors):
        return render_app_error(BadRequest("The request body is not valid JSON."), request_id)
    body = error_body("validation_error", _validation_errors(errors), request_id)
    return JSONResponse(body, status_code=422, headers={"X-Request-ID": request_id} if request_id else None)


async def _handle_database_error(request: Request, exc: Exception) -> JSONResponse:
    app_error = database_error_as_app_error(exc)
    if app_error is None:
        raise exc
    log.warning("database.unavailable", error_type=type(exc).__name__, error=str(exc).partition("\n")[0])
    return render_app_error(app_error, request_id_of(request))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _handle_app_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    for database_error in (OperationalError, PoolTimeoutError, DBAPIError, ConnectionError, TimeoutError):
        app.add_exception_handler(database_error, _handle_database_error)

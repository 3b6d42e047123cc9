"""Pure-ASGI middlewares: request context (id, access log, security headers, last-resort 500) and
the request body size limit. Pure ASGI so contextvars bound here reach the endpoint and its logs."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AppError, InternalError, PayloadTooLarge, database_error_as_app_error, render_app_error
from app.metrics import Metrics

access_log = structlog.get_logger("app.access")
error_log = structlog.get_logger("app.errors")

_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
# An API answers JSON, never a page: nothing may load or frame it. The docs page loads Swagger UI.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, hsts: bool = False, metrics: Metrics | None = None) -> None:
        self.app = app
        self.hsts = hsts
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _ACCEPTABLE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        status_code = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if not path.startswith(_DOCS_PATHS):
                    headers.setdefault("content-security-policy", API_CONTENT_SECURITY_POLICY)
                if self.hsts:
                    headers.setdefault("strict-transport-security", "max-age=63072000; includeSubDomains")
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception as exc:
                if response_started:
                    error_log.exception("request.failed_after_response_started", path=path)
                    raise
                app_error = _as_app_error(exc)
                if app_error.status_code >= 500 and not isinstance(exc, AppError):
                    error_log.exception("request.unhandled_error", method=scope["method"], path=path)
                response = render_app_error(app_error, request_id)
                await response(scope, receive, send_with_headers)
            finally:
                seconds = time.perf_counter() - started
                access_log.info(
                    "http.request",
                    method=scope["method"],
                    path=path,
                    status=status_code,
                    duration_ms=round(seconds * 1000, 2),
                    client=_client_host(scope),
                )
                if self.metrics is not None:
                    self.metrics.observe_request(
                        scope["method"], _route_template(scope), status_code, seconds
                    )


def _as_app_error(exc: Exception) -> AppError:
    if isinstance(exc, AppError):
        return exc
    return database_error_as_app_error(exc) or InternalError()


def _route_template(scope: Scope) -> str:
    """The matched route's template with its router's prefix (`/api/v1/images/{image_id}`), which keeps
    metric labels bounded. FastAPI's included routers match on a relative template, so the prefix is
    what the path has before the part that template matched."""
    template = getattr(scope.get("route"), "path_format", None)
    if not isinstance(template, str):
        return "unmatched"
    path: str = scope["path"]
    try:
        matched = template.format(**scope.get("path_params", {}))
    except (KeyError, IndexError, ValueError):
        return template
    return path[: len(path) - len(matched)] + template if path.endswith(matched) else template


def _client_host(scope: Scope) -> str | None:
    client: Any = scope.get("client")
    return client[0] if client else None


class BodySizeLimitMiddleware:
    """Refuses bodies over the limit: at once from Content-Length, or while streaming a chunked body,
    so an oversize upload is never buffered whole."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = render_app_error(self._too_large(), scope.get("state", {}).get("request_id"))
            await response(scope, receive, send)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than {self.max_bytes} bytes.")

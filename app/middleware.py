"""Pure-ASGI middlewares: request context (id, access log, security headers, last-resort 500, clients
that hang up) and the request body size limit. Pure ASGI so contextvars bound here reach the endpoint
and its logs."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import logging as app_logging
from app.errors import AppError, InternalError, PayloadTooLarge, database_error_as_app_error, render_app_error
from app.integrations.error_tracking import report_exception
from app.metrics import Metrics
from app.services import audit

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
# nginx's status for a client that closed the connection before it was answered: not a server error.
CLIENT_CLOSED_REQUEST = 499


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, hsts: bool = False, metrics: Metrics | None = None) -> None:
        self.app = app
        self.hsts = hsts
        self.metrics = metrics
        security = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
        if hsts:
            security.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
        self._docs_headers = security
        self._api_headers = [*security, (b"content-security-policy", API_CONTENT_SECURITY_POLICY.encode())]

    def added_headers(self, path: str) -> list[tuple[bytes, bytes]]:
        """The headers every answer gets unless the route set its own (the docs page loads Swagger UI, so
        it goes without the API's content security policy)."""
        return self._docs_headers if path.startswith(_DOCS_PATHS) else self._api_headers

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
        # The client went away before it was answered (the server told us while we read its body).
        client_left = False
        started = time.perf_counter()

        async def watching_receive() -> Message:
            nonlocal client_left
            message = await receive()
            if message["type"] == "http.disconnect" and not response_started:
                client_left = True
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                # One pass over the answer's headers (not a scan per header added): each request pays it.
                raw: list[tuple[bytes, bytes]] = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != b"x-request-id"
                ]
                present = {name.lower() for name, _ in raw}
                raw.append((b"x-request-id", request_id.encode("latin-1")))
                raw.extend(pair for pair in self.added_headers(path) if pair[0] not in present)
                message["headers"] = raw
            await send(message)

        client = _client_host(scope)
        # Who is asking, for the audit rows this request writes (the endpoint and its tasks see it).
        client_ip = audit.client_ip.set(client or "unknown")
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, watching_receive, send_with_headers)
            except Exception as exc:
                if _is_hang_up(exc):
                    # Nobody is left to answer, and nothing went wrong here: no 500, no traceback.
                    client_left = client_left or not response_started
                elif response_started:
                    error_log.exception("request.failed_after_response_started", path=path)
                    raise
                else:
                    client_left = False  # a failure of ours, whoever is still listening
                    app_error = _as_app_error(exc)
                    if app_error.status_code >= 500 and not isinstance(exc, AppError):
                        error_log.exception("request.unhandled_error", method=scope["method"], path=path)
                        report_exception(exc)
                    response = render_app_error(app_error, request_id)
                    await response(scope, watching_receive, send_with_headers)
            finally:
                seconds = time.perf_counter() - started
                # Whatever the app answered after the client left (e.g. FastAPI's 400 for a body it
                # could not read) reached no one.
                status = CLIENT_CLOSED_REQUEST if client_left else status_code
                audit.client_ip.reset(client_ip)
                app_logging.access_log.request(
                    scope["method"], path, status, round(seconds * 1000, 2), client
                )
                if self.metrics is not None:
                    self.metrics.observe_request(scope["method"], _route_template(scope), status, seconds)


def _is_hang_up(exc: BaseException) -> bool:
    """Whether `exc` is, or was raised while handling, the client's disconnect (Starlette raises
    ClientDisconnect from the body stream; FastAPI and our own code may wrap it, task groups group it)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ClientDisconnect):
            return True
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(link for link in (current.__cause__, current.__context__) if link is not None)
    return False


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


class _BodyTooLarge(HTTPException):
    """Raised from `receive` once the body passes the limit. An HTTPException, because FastAPI passes
    those on from its body parsing (any other exception there becomes a 400 "error parsing the body");
    the error handlers answer it as 413 `payload_too_large`."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body is larger than {max_bytes} bytes.")


class BodySizeLimitMiddleware:
    """Refuses bodies over the limit: at once from Content-Length, or while streaming a chunked body,
    so an oversize upload is never buffered whole. Whoever reads the body (FastAPI's JSON or form
    parsing, a route's own `request.body()` or `request.form()`), the answer is 413."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is None and "transfer-encoding" not in headers:
            # No body at all (most GETs): nothing to count, so no wrapping on the hot path.
            await self.app(scope, receive, send)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await render_app_error(self._too_large(), request_id)(scope, receive, send)
            return

        received = 0
        exceeded = False
        response_started = False
        replaced = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def guarded_send(message: Message) -> None:
            # Code that turned the refusal into another answer (a broad `except`) is overruled.
            nonlocal response_started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                response_started = True
                if exceeded and message["status"] != 413:
                    replaced = True
                    await render_app_error(self._too_large(), request_id)(scope, receive, send)
                    return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if response_started:
                raise
            await render_app_error(self._too_large(), request_id)(scope, receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than {self.max_bytes} bytes.")

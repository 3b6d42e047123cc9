"""Error tracking with Sentry, by setting only (SENTRY_DSN): the official SDK with its FastAPI
integration, and a scrubber every event passes through before it leaves the process, so no request
body, cookie, credential or email address ever reaches Sentry. Events carry the request id as a tag."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import sentry_sdk
import structlog
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration

from app.config import Settings

FILTERED = "[Filtered]"
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# Keys whose values are secrets or personal data wherever they appear in an event.
_SECRET_KEY = re.compile(
    r"pass|secret|token|authorization|cookie|api[-_]?key|signature|csrf|email|credential|otp",
    re.IGNORECASE,
)
_SAFE_HEADERS = frozenset({"content-type", "content-length", "user-agent", "accept", "x-request-id", "host"})


def init_error_tracking(settings: Settings) -> bool:
    """Turns Sentry on when SENTRY_DSN is set; False (and nothing loaded) otherwise."""
    if settings.sentry_dsn is None:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.environment.value,
        sample_rate=settings.sentry_sample_rate,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        max_request_body_size="never",
        include_local_variables=False,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        integrations=[StarletteIntegration(), FastApiIntegration()],
    )
    return True


def report_exception(exc: BaseException) -> None:
    """An error the app answered with a 500 itself (so no integration saw it); a no-op when off."""
    sentry_sdk.capture_exception(exc)


def scrub_event(event: Any, hint: Any = None) -> Any:
    """The event without bodies, cookies, credentials or emails, tagged with the request id."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        request.pop("query_string", None)
        headers = request.get("headers")
        if isinstance(headers, Mapping):
            request["headers"] = {
                name: value for name, value in headers.items() if name.lower() in _SAFE_HEADERS
            }
        if isinstance(request.get("url"), str):
            request["url"] = request["url"].split("?", 1)[0]
    user = event.get("user")
    if isinstance(user, dict):
        event["user"] = {"id": user["id"]} if "id" in user else {}
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        event.setdefault("tags", {})["request_id"] = request_id
    return _scrubbed(event)


def _scrubbed(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY.search(key):
        return FILTERED
    if isinstance(value, dict):
        return {name: _scrubbed(item, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_scrubbed(item) for item in value)
    if isinstance(value, str):
        return _EMAIL.sub(FILTERED, value)
    return value

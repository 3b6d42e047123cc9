"""Sentry by setting only: an error the app answers with a 500 reaches Sentry tagged with its request id,
and nothing secret or personal leaves with it (no body, cookie, Authorization, API key or email)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.integrations.error_tracking import FILTERED, init_error_tracking, scrub_event
from app.main import create_app
from tests.conftest import make_settings

EMAIL = "jane.doe@example.com"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.secret-token-value"
COOKIE = "pf_session=cookie-secret-value"
API_KEY = "pk_live_0123456789abcdef"


class CapturingTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event":
                self.events.append(json.loads(item.payload.get_bytes()))


@pytest.fixture
def captured() -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    yield transport
    sentry_sdk.init()  # no DSN: a disabled client for whatever runs next in this process


def test_without_a_dsn_nothing_is_turned_on() -> None:
    assert init_error_tracking(make_settings()) is False


async def test_an_unhandled_error_reaches_sentry_scrubbed_and_tagged(
    database_url: str, database: Database, captured: CapturingTransport
) -> None:
    settings: Settings = make_settings(database_url=database_url, sentry_dsn="https://key@sentry.example/1")
    container = Container.build(settings, database)
    app = create_app(settings, database, container)
    sentry_sdk.get_client().transport = captured

    async def explode() -> None:
        raise RuntimeError(f"could not bill {EMAIL}")

    app.add_api_route("/explode", explode, methods=["POST"])
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            response = await client.post(
                "/explode?email=" + EMAIL,
                json={"password": "hunter2-password", "email": EMAIL},
                headers={
                    "Authorization": BEARER,
                    "Cookie": COOKIE,
                    "X-API-Key": API_KEY,
                    "X-Request-ID": "req-42",
                },
            )
    finally:
        await container.aclose()
    sentry_sdk.flush()

    assert response.status_code == 500
    assert response.json()["request_id"] == "req-42"
    (event,) = captured.events
    assert event["tags"]["request_id"] == "req-42"
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    sent = json.dumps(event)
    for secret in (EMAIL, "hunter2-password", "secret-token-value", "cookie-secret-value", API_KEY):
        assert secret not in sent


def test_the_scrubber_removes_every_secret_and_personal_field() -> None:
    event = {
        "message": f"password reset for {EMAIL}",
        "request": {
            "url": f"https://api.example/reset?email={EMAIL}",
            "method": "POST",
            "data": {"password": "p4ss"},
            "cookies": {"pf_session": "c"},
            "query_string": f"email={EMAIL}",
            "headers": {
                "Authorization": BEARER,
                "Cookie": COOKIE,
                "User-Agent": "app/1.0",
                "X-Api-Key": API_KEY,
            },
        },
        "user": {"id": "u-1", "email": EMAIL, "ip_address": "203.0.113.9"},
        "extra": {"refresh_token": "r", "nested": [{"client_secret": "s", "note": f"mail {EMAIL}"}]},
        "breadcrumbs": {"values": [{"message": f"login {EMAIL}", "data": {"api_key": API_KEY}}]},
    }

    scrubbed = scrub_event(event)

    request = scrubbed["request"]
    assert set(request) == {"url", "method", "headers"}
    assert request["url"] == "https://api.example/reset"
    assert request["headers"] == {"User-Agent": "app/1.0"}
    assert scrubbed["user"] == {"id": "u-1"}
    assert scrubbed["extra"]["refresh_token"] == FILTERED
    assert scrubbed["extra"]["nested"][0]["client_secret"] == FILTERED
    assert scrubbed["breadcrumbs"]["values"][0]["data"]["api_key"] == FILTERED
    sent = json.dumps(scrubbed)
    for secret in (EMAIL, "p4ss", "203.0.113.9", API_KEY, "secret-token-value"):
        assert secret not in sent

"""Per-account limits hold for every spelling of an address that reaches the same account, and a password
reset request does its work after the answer, so neither answer nor timing tells who has an account."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.services import email as email_service
from tests.conftest import make_settings
from tests.support.accounts import PASSWORD, last_email_to, register, sign_up

ADDRESS = "user@example.com"
# Spellings the account lookup reads as ADDRESS: case, blanks, full-width letters in the domain.
SAME_ACCOUNT = [
    "USER@EXAMPLE.COM",
    " user@example.com ",
    "user@\uff45xample.com",  # one full-width e
    "User@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.\uff23\uff2f\uff2d",  # a full-width domain
]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        rate_limit_login_per_ip="1000/minute",
        rate_limit_login_per_account="2/minute",
        rate_limit_password_forgot_per_ip="1000/hour",
        rate_limit_password_forgot_per_account="1/hour",
        rate_limit_verification_per_ip="1000/hour",
        rate_limit_verification_per_account="1/hour",
    )


def _login(email: str, password: str) -> dict[str, str]:
    return {"email": email, "password": password}


@pytest.mark.parametrize("spelling", SAME_ACCOUNT)
async def test_a_locked_account_stays_locked_under_another_spelling_of_its_address(
    spelling: str, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await sign_up(client, session, ADDRESS)  # one successful login, inside the budget of two
    wrong = await client.post("/api/v1/auth/login", json=_login(ADDRESS, "not-the-password"))
    assert wrong.status_code == 401
    assert (await client.post("/api/v1/auth/login", json=_login(ADDRESS, PASSWORD))).status_code == 429

    guessed = await client.post("/api/v1/auth/login", json=_login(spelling, PASSWORD))

    assert guessed.status_code == 429, guessed.text
    assert guessed.json()["error"] == "rate_limited"
    assert "access_token" not in guessed.json()


@pytest.mark.parametrize("spelling", SAME_ACCOUNT)
async def test_reset_and_verification_limits_count_every_spelling_as_one_account(
    spelling: str, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/api/v1/auth/password/forgot", json={"email": ADDRESS})).status_code == 202
    again = await client.post("/api/v1/auth/password/forgot", json={"email": spelling})
    assert again.status_code == 429

    assert (await register(client, ADDRESS)).status_code == 201
    resend = "/api/v1/auth/resend-verification"
    assert (await client.post(resend, json={"email": ADDRESS})).status_code == 202
    assert (await client.post(resend, json={"email": spelling})).status_code == 429


async def test_a_password_reset_is_prepared_after_the_answer_is_sent(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sign_up(client, session, ADDRESS)
    happened: list[str] = []
    enqueue = email_service.enqueue

    async def recorded_enqueue(*args: Any, **kwargs: Any) -> Any:
        happened.append(f"enqueue {kwargs['tag']}")
        return await enqueue(*args, **kwargs)

    monkeypatch.setattr(email_service, "enqueue", recorded_enqueue)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/auth/password/forgot",
        "raw_path": b"/api/v1/auth/password/forgot",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    body = httpx.Request("POST", "http://testserver", json={"email": ADDRESS}).content
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            happened.append(f"answered {message['status']}")

    await app(scope, receive, send)

    assert happened == ["answered 202", "enqueue reset_password"]
    assert "reset-password?token=" in (await last_email_to(session, ADDRESS, "reset_password")).text_body

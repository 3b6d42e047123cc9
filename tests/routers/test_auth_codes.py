"""Emailed 6-digit codes over HTTP: sign up and sign in with them, and every way a code is refused
(wrong until the attempts run out, expired, reused, superseded), the rate limits, no account
enumeration, the code never leaving the server but in the email; and the non-consuming checks of a code
challenge and of a password reset link."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.models import AuditLog, EmailCode, EmailCodePurpose, OutboxEmail, User
from app.security import sha256_hex
from app.services import login_codes
from tests.conftest import make_settings
from tests.support.accounts import (
    PASSWORD,
    code_in,
    last_email_to,
    register,
    sign_in,
    sign_up,
    token_in,
)
from tests.support.http import assert_error

REQUEST = "/api/v1/auth/code/request"
VERIFY = "/api/v1/auth/code/verify"
CHECK = "/api/v1/auth/code/check"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        rate_limit_code_request_per_ip="1000/hour",
        rate_limit_code_verify_per_ip="1000/hour",
    )


async def _ask(client: httpx.AsyncClient, email: str, purpose: str, **fields: Any) -> str:
    response = await client.post(REQUEST, json={"email": email, "purpose": purpose, **fields})
    assert response.status_code == 202, response.text
    return str(response.json()["token"])


async def _code(session: AsyncSession, email: str, purpose: str) -> str:
    return code_in(await last_email_to(session, email, f"{purpose}_code"))


async def _verify(client: httpx.AsyncClient, token: str, code: str) -> httpx.Response:
    return await client.post(VERIFY, json={"token": token, "code": code})


async def _valid(client: httpx.AsyncClient, token: str) -> bool:
    response = await client.post(CHECK, json={"token": token})
    assert response.status_code == 200, response.text
    return bool(response.json()["valid"])


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def _audit(session: AsyncSession, action: str, method: str) -> list[AuditLog]:
    rows = await session.scalars(select(AuditLog).where(AuditLog.action == action))
    return [row for row in rows if row.details.get("method") == method]


async def test_sign_up_with_a_code_then_sign_in_with_one(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    token = await _ask(client, "New.Person@Example.com", "signup", name="Nia", password=PASSWORD)
    assert await session.scalar(select(User).where(User.email == "new.person@example.com")) is None

    signed_up = await _verify(client, token, await _code(session, "new.person@example.com", "signup"))

    assert signed_up.status_code == 200, signed_up.text
    assert signed_up.json()["token_type"] == "bearer"
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {signed_up.json()['access_token']}"}
    )
    assert me.status_code == 200
    assert (me.json()["email"], me.json()["name"]) == ("new.person@example.com", "Nia")
    user = await session.scalar(select(User).where(User.email == "new.person@example.com"))
    assert user is not None
    assert user.email_verified_at is not None
    await sign_in(client, "new.person@example.com")  # the sign-up's password works

    login_token = await _ask(client, "new.person@example.com", "login")
    signed_in = await _verify(client, login_token, await _code(session, "new.person@example.com", "login"))

    assert signed_in.status_code == 200, signed_in.text
    headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200
    assert len(await _audit(session, "login.succeeded", "code")) == 2


async def test_a_resent_sign_up_code_keeps_the_first_requests_name_and_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await _ask(client, "resend@example.com", "signup", name="Ray", password=PASSWORD)
    first_code = await _code(session, "resend@example.com", "signup")
    second = await _ask(client, "resend@example.com", "signup", resend_of=first)  # "send it again"

    assert_error(await _verify(client, first, first_code), 400, "invalid_or_expired_code")  # superseded
    response = await _verify(client, second, await _code(session, "resend@example.com", "signup"))
    assert response.status_code == 200, response.text
    await sign_in(client, "resend@example.com")
    user = await session.scalar(select(User).where(User.email == "resend@example.com"))
    assert user is not None
    assert user.name == "Ray"


async def test_someone_elses_pending_sign_up_never_sets_the_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """A stranger asked for a sign-up code for this address with a password of their own: the owner's
    own request (without that challenge's token) creates the account without it."""
    await _ask(client, "target@example.com", "signup", name="Mallory", password="strangers password")
    token = await _ask(client, "target@example.com", "signup")
    response = await _verify(client, token, await _code(session, "target@example.com", "signup"))
    assert response.status_code == 200
    user = await session.scalar(select(User).where(User.email == "target@example.com"))
    assert user is not None
    assert user.password_hash is None
    assert user.name is None
    stranger = await client.post(
        "/api/v1/auth/login", json={"email": "target@example.com", "password": "strangers password"}
    )
    assert_error(stranger, 401, "invalid_credentials")


async def test_a_login_code_with_a_password_needs_the_right_one_first(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await sign_up(client, session, "two@example.com")
    wrong = await client.post(
        REQUEST, json={"email": "two@example.com", "purpose": "login", "password": "not-the-password"}
    )
    assert_error(wrong, 401, "invalid_credentials")
    assert (await _audit(session, "login.failed", "password"))[-1].details["reason"] == "invalid_credentials"

    token = await _ask(client, "two@example.com", "login", password=PASSWORD)
    assert (await _verify(client, token, await _code(session, "two@example.com", "login"))).status_code == 200


async def test_wrong_codes_use_up_the_attempts_then_even_the_right_one_fails(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await sign_up(client, session, "guess@example.com")
    token = await _ask(client, "guess@example.com", "login")
    code = await _code(session, "guess@example.com", "login")

    for _ in range(settings.login_code_max_attempts):
        assert_error(await _verify(client, token, _wrong(code)), 400, "invalid_or_expired_code")
    assert not await _valid(client, token)
    assert_error(await _verify(client, token, code), 400, "invalid_or_expired_code")

    failures = await _audit(session, "login.failed", "code")
    assert [row.details["reason"] for row in failures] == ["wrong_code"] * settings.login_code_max_attempts
    assert all(code not in str(row.details) for row in failures)


async def test_checking_a_challenge_does_not_spend_it_or_count_an_attempt(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await sign_up(client, session, "check@example.com")
    token = await _ask(client, "check@example.com", "login")
    for _ in range(settings.login_code_max_attempts + 1):
        assert await _valid(client, token)
    response = await _verify(client, token, await _code(session, "check@example.com", "login"))
    assert response.status_code == 200
    assert not await _valid(client, token)
    assert not await _valid(client, "no-such-challenge")


async def test_an_expired_code_is_refused(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await sign_up(client, session, "late@example.com")
    token = await _ask(client, "late@example.com", "login")
    code = await _code(session, "late@example.com", "login")
    await session.execute(
        update(EmailCode)
        .where(EmailCode.token_hash == sha256_hex(token))
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    await session.flush()

    assert not await _valid(client, token)
    assert_error(await _verify(client, token, code), 400, "invalid_or_expired_code")


async def test_a_code_works_once(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await sign_up(client, session, "once@example.com")
    token = await _ask(client, "once@example.com", "login")
    code = await _code(session, "once@example.com", "login")
    assert (await _verify(client, token, code)).status_code == 200
    assert_error(await _verify(client, token, code), 400, "invalid_or_expired_code")


@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", " 12345"])
async def test_a_code_is_six_digits(client: httpx.AsyncClient, code: str) -> None:
    assert_error(await _verify(client, "some-token", code), 422, "validation_error")


async def test_no_enumeration_every_address_gets_the_same_answer(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await sign_up(client, session, "known@example.com")
    await register(client, "unverified@example.com")
    answers = {
        address: await client.post(REQUEST, json={"email": address, "purpose": purpose})
        for address, purpose in (
            ("known@example.com", "login"),
            ("unverified@example.com", "login"),
            ("nobody@example.com", "login"),
            ("known@example.com", "signup"),
        )
    }
    shapes = {
        (r.status_code, r.json()["message"], r.json()["expires_in"], len(r.json()["token"]))
        for r in answers.values()
    }
    assert len(shapes) == 1
    for response in answers.values():  # every challenge checks as valid, decoys too
        assert await _valid(client, response.json()["token"])

    session.expunge_all()
    login_codes = await session.scalars(select(OutboxEmail.recipient).where(OutboxEmail.tag == "login_code"))
    assert list(login_codes) == ["known@example.com"]
    signup_mail = await last_email_to(session, "known@example.com", "signup_code")
    assert "already have" in signup_mail.text_body


async def test_a_decoy_challenge_opens_nothing(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await register(client, "pending@example.com")
    token = await _ask(client, "pending@example.com", "login")  # unverified: no code is sent
    stored = await session.scalar(select(EmailCode).where(EmailCode.token_hash == sha256_hex(token)))
    assert stored is not None
    assert stored.code_hash == ""
    assert stored.user_id is None
    for code in ("000000", "123456"):
        assert_error(await _verify(client, token, code), 400, "invalid_or_expired_code")


async def test_a_sign_up_code_takes_over_an_address_someone_else_registered(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Pre-account takeover: whoever registered the address first never proved it; the owner's code
    ends the squatter's password."""
    await register(client, "owner@example.com", "squatters password")
    token = await _ask(client, "owner@example.com", "signup")
    response = await _verify(client, token, await _code(session, "owner@example.com", "signup"))
    assert response.status_code == 200
    squatter = await client.post(
        "/api/v1/auth/login", json={"email": "owner@example.com", "password": "squatters password"}
    )
    assert_error(squatter, 401, "invalid_credentials")


class TestRateLimits:
    @pytest.fixture
    def settings(self, database_url: str) -> Settings:
        return make_settings(
            database_url=database_url,
            rate_limit_code_request_per_ip="4/hour",
            rate_limit_code_request_per_account="2/hour",
        )

    async def test_requests_are_limited_per_address_and_per_caller(self, client: httpx.AsyncClient) -> None:
        for purpose in ("login", "signup"):
            answer = await client.post(REQUEST, json={"email": "a@example.com", "purpose": purpose})
            assert answer.status_code == 202
        again = await client.post(REQUEST, json={"email": "A@EXAMPLE.com", "purpose": "login"})
        assert_error(again, 429, "rate_limited")
        assert int(again.headers["Retry-After"]) > 0

        fourth = await client.post(REQUEST, json={"email": "b@example.com", "purpose": "login"})
        assert fourth.status_code == 202
        # The caller's own budget of 4 (the refused request counted too) is spent, whatever the address.
        other = await client.post(REQUEST, json={"email": "c@example.com", "purpose": "login"})
        assert_error(other, 429, "rate_limited")


async def test_the_code_never_leaves_the_server_but_in_the_email(
    client: httpx.AsyncClient, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    responses: list[httpx.Response] = []
    with caplog.at_level(logging.DEBUG):
        token = await _ask(client, "secret@example.com", "signup", password=PASSWORD)
        code = await _code(session, "secret@example.com", "signup")
        responses.append(await _verify(client, token, _wrong(code)))
        responses.append(await client.post(CHECK, json={"token": token}))
        responses.append(await _verify(client, token, code))
        login_token = await _ask(client, "secret@example.com", "login")
        login_code = await _code(session, "secret@example.com", "login")
        responses.append(await _verify(client, login_token, login_code))
    logged = "\n".join(f"{record.getMessage()} {record.msg!r}" for record in caplog.records)
    assert "auth.code_requested" in logged  # the logs were captured at all
    for secret in (code, login_code):
        assert secret not in logged
        for response in responses:
            assert secret not in response.text
            assert all(secret not in value for value in response.headers.values())
    stored = await session.scalars(select(EmailCode.code_hash))
    assert all(len(value) == 64 and value != sha256_hex(code) for value in stored)
    subjects = await session.scalars(select(OutboxEmail.subject))
    assert all(code not in subject and login_code not in subject for subject in subjects)


class TestResetLinkCheck:
    async def test_checking_a_reset_link_does_not_spend_it(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await sign_up(client, session, "reset-check@example.com")
        await client.post("/api/v1/auth/password/forgot", json={"email": "reset-check@example.com"})
        token = token_in(await last_email_to(session, "reset-check@example.com", "reset_password"))
        check = "/api/v1/auth/password/reset/check"

        for _ in range(2):
            answer = await client.post(check, json={"token": token})
            assert answer.status_code == 200
            assert answer.json() == {"valid": True}
        reset = await client.post(
            "/api/v1/auth/password/reset", json={"token": token, "password": "another fine passphrase"}
        )
        assert reset.status_code == 200
        assert (await client.post(check, json={"token": token})).json() == {"valid": False}
        assert (await client.post(check, json={"token": "made-up"})).json() == {"valid": False}
        assert_error(await client.post(check, json={"token": ""}), 422, "validation_error")


async def test_a_verifier_for_one_purpose_refuses_the_others_challenge(
    session: AsyncSession, container: Container, client: httpx.AsyncClient
) -> None:
    """The service's `purpose` guard (a client with separate login and sign-up forms): the wrong form
    neither opens the challenge nor uses one of its attempts."""
    await sign_up(client, session, "forms@example.com")
    token = await _ask(client, "forms@example.com", "login")
    code = await _code(session, "forms@example.com", "login")
    with pytest.raises(login_codes.InvalidCode):
        await login_codes.verify_code(
            session, container, token=token, code=code, purpose=EmailCodePurpose.signup
        )
    pair = await login_codes.verify_code(
        session, container, token=token, code=code, purpose=EmailCodePurpose.login
    )
    assert pair.access_token

"""Local accounts end to end over HTTP: register, verify, login, refresh rotation, logout, reset."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import httpx
import pytest
from jose import jwt
from passlib.hash import bcrypt
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.models import CreditLedgerEntry, EmailStatus, OutboxEmail, RevokedAccessToken, User
from app.services.sessions_sweep import sweep_expired
from tests.support.accounts import (
    PASSWORD,
    last_email_to,
    past_refresh_grace,
    register,
    sign_in,
    sign_up,
    token_in,
)
from tests.support.http import assert_error


class TestRegister:
    async def test_creates_an_unverified_account_with_bonus_and_a_sent_email(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        response = await register(client, "  Jane.Doe@Example.COM ")
        assert response.status_code == 201
        assert response.json()["email"] == "jane.doe@example.com"
        user = await session.scalar(select(User).where(User.email == "jane.doe@example.com"))
        assert user is not None
        assert user.email_verified_at is None
        assert user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        assert user.plan == "free"
        bonus = await session.scalar(
            select(CreditLedgerEntry.amount).where(CreditLedgerEntry.reason == "signup_bonus")
        )
        assert bonus == 10_000
        email = await last_email_to(session, "jane.doe@example.com", "verify_email")
        assert email.status == EmailStatus.sent.value  # delivered by the background task after commit
        assert email.provider == "console"
        assert "/api/v1/auth/verify?token=" in email.text_body

    async def test_email_is_unique_case_insensitively(self, client: httpx.AsyncClient) -> None:
        assert (await register(client, "dup@example.com")).status_code == 201
        assert_error(await register(client, "DUP@example.com"), 409, "email_taken")

    @pytest.mark.parametrize(
        "body",
        [
            {"email": "a@example.com", "password": "short"},
            {"email": "a@example.com", "password": "x" * 129},
            {"email": "a@example.com"},
            {"password": PASSWORD},
        ],
    )
    async def test_password_policy_and_required_fields(
        self, client: httpx.AsyncClient, body: dict[str, str]
    ) -> None:
        assert_error(await client.post("/api/v1/auth/register", json=body), 422, "validation_error")

    async def test_invalid_email_is_422_and_writes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        response = await client.post(
            "/api/v1/auth/register", json={"email": "not-an-email", "password": PASSWORD}
        )
        assert_error(response, 422, "validation_error")
        assert await session.scalar(select(func.count()).select_from(User)) == 0


class TestVerification:
    async def test_unverified_accounts_cannot_log_in(self, client: httpx.AsyncClient) -> None:
        await register(client, "new@example.com")
        response = await client.post(
            "/api/v1/auth/login", json={"email": "new@example.com", "password": PASSWORD}
        )
        assert_error(response, 403, "email_not_verified")

    async def test_token_is_single_use(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        await register(client, "once@example.com")
        token = token_in(await last_email_to(session, "once@example.com", "verify_email"))
        assert (await client.post("/api/v1/auth/verify", json={"token": token})).status_code == 200
        assert_error(
            await client.post("/api/v1/auth/verify", json={"token": token}), 400, "invalid_or_expired_token"
        )

    async def test_link_redirects_to_the_frontend(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await register(client, "link@example.com")
        token = token_in(await last_email_to(session, "link@example.com", "verify_email"))
        response = await client.get("/api/v1/auth/verify", params={"token": token})
        assert response.status_code == 303
        assert response.headers["location"].endswith("/email-verified?status=verified")
        again = await client.get("/api/v1/auth/verify", params={"token": token})
        assert again.headers["location"].endswith("status=invalid")

    async def test_expired_token_is_refused(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        from app.models import OneTimeToken

        await register(client, "late@example.com")
        token = token_in(await last_email_to(session, "late@example.com", "verify_email"))
        for row in await session.scalars(select(OneTimeToken)):
            row.expires_at = utcnow() - timedelta(seconds=1)
        await session.flush()
        assert_error(
            await client.post("/api/v1/auth/verify", json={"token": token}), 400, "invalid_or_expired_token"
        )

    async def test_resend_answers_the_same_for_unknown_addresses_and_replaces_the_link(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await register(client, "again@example.com")
        first = token_in(await last_email_to(session, "again@example.com", "verify_email"))
        known = await client.post("/api/v1/auth/resend-verification", json={"email": "again@example.com"})
        unknown = await client.post("/api/v1/auth/resend-verification", json={"email": "nobody@example.com"})
        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json()
        second = token_in(await last_email_to(session, "again@example.com", "verify_email"))
        assert second != first
        assert_error(
            await client.post("/api/v1/auth/verify", json={"token": first}), 400, "invalid_or_expired_token"
        )
        assert (await client.post("/api/v1/auth/verify", json={"token": second})).status_code == 200
        assert (
            await session.scalar(
                select(func.count())
                .select_from(OutboxEmail)
                .where(OutboxEmail.recipient == "nobody@example.com")
            )
            == 0
        )


class TestLogin:
    async def test_wrong_password_and_unknown_email_look_the_same(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await sign_up(client, session, "known@example.com")
        wrong = await client.post(
            "/api/v1/auth/login", json={"email": "known@example.com", "password": "nope-nope"}
        )
        unknown = await client.post(
            "/api/v1/auth/login", json={"email": "ghost@example.com", "password": "nope-nope"}
        )
        assert wrong.status_code == unknown.status_code == 401
        body_wrong, body_unknown = wrong.json(), unknown.json()
        del body_wrong["request_id"], body_unknown["request_id"]
        assert (
            body_wrong
            == body_unknown
            == {
                "error": "invalid_credentials",
                "detail": "The email or password is incorrect.",
            }
        )

    async def test_unknown_email_still_pays_for_a_password_check(self, container: Container) -> None:
        calls: list[str] = []
        original = container.passwords._context.verify

        def counting_verify(secret: str, hashed: str) -> bool:
            calls.append(hashed)
            return bool(original(secret, hashed))

        container.passwords._context.verify = counting_verify  # type: ignore[method-assign]
        matches, _ = await container.passwords.verify("whatever", None)
        assert not matches
        assert calls == [container.passwords._decoy_hash]

    async def test_swagger_password_form_logs_in(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await sign_up(client, session, "form@example.com")
        response = await client.post(
            "/api/v1/auth/login", data={"username": "form@example.com", "password": PASSWORD}
        )
        assert response.status_code == 200
        assert response.json()["token_type"] == "bearer"

    async def test_bcrypt_hashes_verify_and_are_upgraded(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = User(
            email="legacy@example.com", password_hash=bcrypt.hash(PASSWORD), email_verified_at=utcnow()
        )
        session.add(user)
        await session.flush()
        await sign_in(client, "legacy@example.com")
        session.expunge_all()
        upgraded = await session.scalar(select(User.password_hash).where(User.email == "legacy@example.com"))
        assert upgraded is not None
        assert upgraded.startswith("$argon2id$")
        await sign_in(client, "legacy@example.com")  # the new hash verifies too

    async def test_access_token_lasts_ten_minutes(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        signed = await sign_up(client, session, "ttl@example.com")
        claims = jwt.get_unverified_claims(signed.access_token)
        assert claims["exp"] - claims["iat"] == 600
        refresh_claims = jwt.get_unverified_claims(signed.refresh_token)
        assert refresh_claims["exp"] - refresh_claims["iat"] == 7 * 24 * 3600


class TestTokens:
    async def test_refresh_rotates_and_reuse_revokes_the_family(
        self, client: httpx.AsyncClient, session: AsyncSession, settings: Settings
    ) -> None:
        signed = await sign_up(client, session, "rotate@example.com")
        first = await client.post("/api/v1/auth/refresh", json={"refresh_token": signed.refresh_token})
        assert first.status_code == 200
        rotated = first.json()["refresh_token"]
        await past_refresh_grace(session, settings)
        # The old token is dead, and presenting it again kills the rotated one too.
        assert_error(
            await client.post("/api/v1/auth/refresh", json={"refresh_token": signed.refresh_token}),
            401,
            "invalid_token",
        )
        assert_error(
            await client.post("/api/v1/auth/refresh", json={"refresh_token": rotated}), 401, "invalid_token"
        )

    async def test_refresh_token_is_not_an_access_token_and_vice_versa(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        signed = await sign_up(client, session, "types@example.com")
        as_access = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {signed.refresh_token}"}
        )
        assert_error(as_access, 401, "invalid_token")
        as_refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": signed.access_token})
        assert_error(as_refresh, 401, "invalid_token")

    async def test_logout_blacklists_access_and_refresh_until_they_expire(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        signed = await sign_up(client, session, "bye@example.com")
        assert (await client.get("/api/v1/users/me", headers=signed.headers)).status_code == 200
        response = await client.post(
            "/api/v1/auth/logout", headers=signed.headers, json={"refresh_token": signed.refresh_token}
        )
        assert response.status_code == 204
        assert_error(await client.get("/api/v1/users/me", headers=signed.headers), 401, "invalid_token")
        refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": signed.refresh_token})
        assert_error(refreshed, 401, "invalid_token")
        revoked = await session.scalar(select(RevokedAccessToken))
        assert revoked is not None

    async def test_expired_blacklist_rows_are_swept(self, session: AsyncSession) -> None:
        session.add(RevokedAccessToken(jti="old", expires_at=utcnow() - timedelta(seconds=1)))
        session.add(RevokedAccessToken(jti="live", expires_at=utcnow() + timedelta(minutes=5)))
        await session.flush()
        swept = await sweep_expired(session)
        assert swept["revoked_access_tokens"] >= 1  # others' committed rows may expire meanwhile
        # Only this test's rows: tests that commit (second app instances) may leave live ones behind.
        mine = select(RevokedAccessToken.jti).where(RevokedAccessToken.jti.in_(["old", "live"]))
        assert list(await session.scalars(mine)) == ["live"]

    @pytest.mark.parametrize(
        "make_token",
        [
            pytest.param(lambda secret, user: "not-a-jwt", id="malformed"),
            pytest.param(lambda secret, user: "a.b.c", id="garbage-segments"),
            pytest.param(
                lambda secret, user: jwt.encode(_claims(user, exp_delta=-60), secret, algorithm="HS256"),
                id="expired",
            ),
            pytest.param(
                lambda secret, user: jwt.encode(_claims(user, nbf_delta=3600), secret, algorithm="HS256"),
                id="not-yet-valid",
            ),
            pytest.param(
                lambda secret, user: jwt.encode(_claims(user), "x" * 40, algorithm="HS256"),
                id="wrongly-signed",
            ),
            pytest.param(lambda secret, user: _unsigned(_claims(user)), id="alg-none"),
        ],
    )
    async def test_bad_access_tokens_are_401_invalid_token_with_one_message(
        self, client: httpx.AsyncClient, session: AsyncSession, container: Container, make_token: object
    ) -> None:
        signed = await sign_up(client, session, f"{uuid.uuid4().hex[:8]}@example.com")
        user_id = jwt.get_unverified_claims(signed.access_token)["sub"]
        token = make_token(container.settings.secret_key.get_secret_value(), user_id)  # type: ignore[operator]
        response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        body = assert_error(response, 401, "invalid_token")
        assert body["detail"] == "The token is invalid or expired."
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_no_credentials_is_401(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get("/api/v1/users/me"), 401, "unauthenticated")


class TestPasswordReset:
    async def test_forgot_answers_the_same_whether_or_not_the_email_exists(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await sign_up(client, session, "forgetful@example.com")
        known = await client.post("/api/v1/auth/password/forgot", json={"email": "forgetful@example.com"})
        unknown = await client.post("/api/v1/auth/password/forgot", json={"email": "nobody@example.com"})
        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json()

    async def test_reset_changes_the_password_and_ends_every_session(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        signed = await sign_up(client, session, "reset@example.com")
        other_device = await sign_in(client, "reset@example.com")
        await client.post("/api/v1/auth/password/forgot", json={"email": "reset@example.com"})
        token = token_in(await last_email_to(session, "reset@example.com", "reset_password"))
        new_password = "a brand new passphrase"
        response = await client.post(
            "/api/v1/auth/password/reset", json={"token": token, "password": new_password}
        )
        assert response.status_code == 200
        for old in (signed, other_device):
            assert_error(await client.get("/api/v1/users/me", headers=old.headers), 401, "invalid_token")
            refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": old.refresh_token})
            assert_error(refreshed, 401, "invalid_token")
        login_old = await client.post(
            "/api/v1/auth/login", json={"email": "reset@example.com", "password": PASSWORD}
        )
        assert_error(login_old, 401, "invalid_credentials")
        fresh = await sign_in(client, "reset@example.com", new_password)
        assert (await client.get("/api/v1/users/me", headers=fresh.headers)).status_code == 200
        reused = await client.post(
            "/api/v1/auth/password/reset", json={"token": token, "password": new_password}
        )
        assert_error(reused, 400, "invalid_or_expired_token")


class TestSecretsStayOutOfLogs:
    async def test_passwords_and_tokens_never_appear_in_logs(
        self, client: httpx.AsyncClient, session: AsyncSession, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.DEBUG):
            signed = await sign_up(client, session, "quiet@example.com")
            await client.post("/api/v1/auth/refresh", json={"refresh_token": signed.refresh_token})
            await client.post("/api/v1/auth/password/forgot", json={"email": "quiet@example.com"})
            reset_token = token_in(await last_email_to(session, "quiet@example.com", "reset_password"))
            await client.post(
                "/api/v1/auth/login", json={"email": "quiet@example.com", "password": "wrong-password"}
            )
        logged = "\n".join(f"{record.getMessage()} {record.msg!r}" for record in caplog.records)
        assert "auth.login" in logged  # the logs were captured at all
        for secret in (PASSWORD, "wrong-password", signed.access_token, signed.refresh_token, reset_token):
            assert secret not in logged


def _claims(user_id: str, exp_delta: int = 600, nbf_delta: int = 0) -> dict[str, object]:
    now = int(utcnow().timestamp())
    return {
        "iss": "pixforge",
        "aud": "pixforge-api",
        "sub": user_id,
        "jti": uuid.uuid4().hex,
        "typ": "access",
        "iat": now,
        "iat_ms": now * 1000,
        "nbf": now + nbf_delta,
        "exp": now + exp_delta,
    }


def _unsigned(claims: dict[str, object]) -> str:
    import base64
    import json

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_logout_with_an_expired_access_token_still_revokes_the_refresh_family(
    client: httpx.AsyncClient, session: AsyncSession, container: Container
) -> None:
    signed = await sign_up(client, session, "late-logout@example.com")
    expired = {"Authorization": "Bearer not-a-valid-token-any-more"}
    response = await client.post(
        "/api/v1/auth/logout", headers=expired, json={"refresh_token": signed.refresh_token}
    )
    assert response.status_code == 204
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": signed.refresh_token})
    assert_error(refreshed, 401, "invalid_token")
    assert_error(await client.post("/api/v1/auth/logout", json={}), 401, "unauthenticated")

"""Google sign-in, API keys, the profile, privacy (export, erasure), rate limits, cookie sessions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.main import create_app
from app.models import ApiKey, AuditLog, CreditLedgerEntry, OutboxEmail, RefreshToken, User
from tests.conftest import make_settings
from tests.fakes.google import FakeGoogle
from tests.support.accounts import PASSWORD, SignedIn, register, sign_in, sign_up
from tests.support.http import assert_error

API = "http://testserver"


class TestGoogleSignIn:
    @pytest.fixture
    def google(self, outside_http: respx.MockRouter) -> FakeGoogle:
        return FakeGoogle(outside_http)

    @pytest.fixture
    def settings(self, database_url: str, google: FakeGoogle) -> Settings:
        return make_settings(
            database_url=database_url,
            google_client_id=google.client_id,
            google_client_secret=google.client_secret,
            public_base_url=API,
            frontend_url="https://app.example.com",
            password_hash_memory_kib=1024,
        )

    async def _start(self, client: httpx.AsyncClient) -> str:
        response = await client.get("/api/v1/auth/google")
        assert response.status_code == 302
        assert "pf_google_state" in response.cookies
        return response.headers["location"]

    async def _callback(self, client: httpx.AsyncClient, callback_url: str) -> dict[str, str]:
        parts = urlsplit(callback_url)
        response = await client.get(f"{parts.path}?{parts.query}")
        assert response.status_code == 302, response.text
        target = urlsplit(response.headers["location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == "https://app.example.com/auth/callback"
        assert not target.query  # tokens travel in the fragment only
        return {key: values[0] for key, values in parse_qs(target.fragment).items()}

    async def test_new_user_signs_in_and_gets_a_session(
        self, client: httpx.AsyncClient, google: FakeGoogle, session: AsyncSession
    ) -> None:
        authorization_url = await self._start(client)
        fragment = await self._callback(client, google.authorize(authorization_url, email="Jane@Example.com"))
        assert fragment["token_type"] == "bearer"
        me = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {fragment['access_token']}"}
        )
        assert me.status_code == 200
        assert me.json()["email"] == "jane@example.com"
        assert me.json()["email_verified"] is True
        # PKCE and the redirect URI were checked by the fake's token endpoint.
        assert google.token_requests[0]["redirect_uri"] == f"{API}/api/v1/auth/google/callback"
        user = await session.scalar(select(User).where(User.google_sub == "110169484474386276334"))
        assert user is not None

    async def test_a_verified_google_email_links_the_existing_account(
        self, client: httpx.AsyncClient, google: FakeGoogle, session: AsyncSession
    ) -> None:
        local = await sign_up(client, session, "jane@example.com")
        fragment = await self._callback(
            client, google.authorize(await self._start(client), email="jane@example.com")
        )
        google_me = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {fragment['access_token']}"}
        )
        local_me = await client.get("/api/v1/users/me", headers=local.headers)
        assert google_me.json()["id"] == local_me.json()["id"]
        assert await session.scalar(select(func.count()).select_from(User)) == 1
        # Signing in twice gives one account and one bonus.
        await self._callback(client, google.authorize(await self._start(client), email="jane@example.com"))
        bonuses = await session.scalar(
            select(func.count())
            .select_from(CreditLedgerEntry)
            .where(CreditLedgerEntry.reason == "signup_bonus")
        )
        assert bonuses == 1

    async def test_an_unverified_google_email_does_not_take_over_an_account(
        self, client: httpx.AsyncClient, google: FakeGoogle, session: AsyncSession
    ) -> None:
        await sign_up(client, session, "victim@example.com")
        fragment = await self._callback(
            client,
            google.authorize(await self._start(client), email="victim@example.com", email_verified=False),
        )
        me = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {fragment['access_token']}"}
        )
        assert me.json()["email"] is None
        assert await session.scalar(select(func.count()).select_from(User)) == 2

    async def test_a_callback_without_the_state_cookie_is_refused(
        self, client: httpx.AsyncClient, google: FakeGoogle, settings: Settings
    ) -> None:
        callback = google.authorize(await self._start(client))
        client.cookies.clear()  # another browser (login CSRF)
        fragment = await self._callback(client, callback)
        assert fragment == {"error": "google_sign_in_failed"}
        assert google.token_requests == []

    async def test_a_tampered_state_is_refused(self, client: httpx.AsyncClient, google: FakeGoogle) -> None:
        callback = google.authorize(await self._start(client))
        fragment = await self._callback(client, callback.replace("state=", "state=x"))
        assert fragment == {"error": "google_sign_in_failed"}

    async def test_denied_consent_returns_an_error(
        self, client: httpx.AsyncClient, google: FakeGoogle
    ) -> None:
        fragment = await self._callback(client, google.deny(await self._start(client)))
        assert fragment == {"error": "google_sign_in_failed"}

    async def test_a_reused_code_is_refused_by_google(
        self, client: httpx.AsyncClient, google: FakeGoogle
    ) -> None:
        callback = google.authorize(await self._start(client))
        state_cookie = client.cookies.get("pf_google_state")
        assert (await self._callback(client, callback)).get("access_token")
        assert state_cookie is not None
        client.cookies.set("pf_google_state", state_cookie, path="/api/v1/auth/google")
        assert await self._callback(client, callback) == {"error": "google_sign_in_failed"}

    async def test_sign_ins_are_on_the_audit_trail_without_codes_or_tokens(
        self, client: httpx.AsyncClient, google: FakeGoogle, session: AsyncSession
    ) -> None:
        callback = google.authorize(await self._start(client), email="jane@example.com")
        state_cookie = client.cookies.get("pf_google_state")
        fragment = await self._callback(client, callback)
        assert state_cookie is not None
        client.cookies.set("pf_google_state", state_cookie, path="/api/v1/auth/google")
        assert await self._callback(client, callback) == {"error": "google_sign_in_failed"}  # code reused

        session.expunge_all()
        user = await session.scalar(select(User).where(User.email == "jane@example.com"))
        assert user is not None
        rows = list(await session.scalars(select(AuditLog).order_by(AuditLog.created_at)))
        assert [(row.action, row.actor_id, row.subject_id, row.details) for row in rows] == [
            ("login.succeeded", user.id, user.id, {"method": "google"}),
            (
                "login.failed",
                None,
                None,
                {"reason": "google_refused", "method": "google", "known_account": False},
            ),
        ]
        assert all(row.ip for row in rows)
        code = parse_qs(urlsplit(callback).query)["code"][0]
        trail = repr([(row.details, row.request_id) for row in rows])
        for secret in (code, fragment["access_token"], fragment["refresh_token"], state_cookie):
            assert secret not in trail

    async def test_not_configured_is_503(self, database_url: str, database: Database) -> None:
        settings = make_settings(database_url=database_url)
        container = Container.build(settings, database)
        app = create_app(settings, database, container)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as client:
            assert_error(await client.get("/api/v1/auth/google"), 503, "provider_not_configured")
        await container.aclose()


class TestApiKeys:
    async def test_create_use_list_and_revoke(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        signed = await sign_up(client, session, "keys@example.com")
        created = await client.post("/api/v1/api-keys", headers=signed.headers, json={"name": "server"})
        assert created.status_code == 201
        secret = created.json()["key"]
        assert secret.startswith(f"pk_{created.json()['prefix']}_")
        stored = await session.scalar(select(ApiKey))
        assert stored is not None
        assert secret not in (stored.secret_hash, stored.prefix)
        key_headers = {"Authorization": f"Bearer {secret}"}
        me = await client.get("/api/v1/users/me", headers=key_headers)
        assert me.json()["email"] == "keys@example.com"
        listed = (await client.get("/api/v1/api-keys", headers=signed.headers)).json()
        assert [key["name"] for key in listed] == ["server"]
        assert "key" not in listed[0]
        assert listed[0]["last_used_at"] is not None
        # A key cannot mint keys.
        assert_error(
            await client.post("/api/v1/api-keys", headers=key_headers, json={"name": "x"}), 403, "forbidden"
        )
        assert (
            await client.delete(f"/api/v1/api-keys/{listed[0]['id']}", headers=signed.headers)
        ).status_code == 204
        assert_error(await client.get("/api/v1/users/me", headers=key_headers), 401, "invalid_token")

    async def test_a_guessed_secret_with_a_real_prefix_is_refused(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        signed = await sign_up(client, session, "guess@example.com")
        prefix = (await client.post("/api/v1/api-keys", headers=signed.headers, json={"name": "a"})).json()[
            "prefix"
        ]
        forged = {"Authorization": f"Bearer pk_{prefix}_{'A' * 43}"}
        assert_error(await client.get("/api/v1/users/me", headers=forged), 401, "invalid_token")

    async def test_someone_elses_key_is_404(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        alice = await sign_up(client, session, "alice@example.com")
        bob = await sign_up(client, session, "bob@example.com")
        key_id = (await client.post("/api/v1/api-keys", headers=alice.headers, json={"name": "a"})).json()[
            "id"
        ]
        assert_error(await client.delete(f"/api/v1/api-keys/{key_id}", headers=bob.headers), 404, "not_found")
        assert (await client.get("/api/v1/api-keys", headers=bob.headers)).json() == []
        assert_error(
            await client.delete(f"/api/v1/api-keys/{uuid.uuid4()}", headers=bob.headers), 404, "not_found"
        )
        assert_error(
            await client.delete("/api/v1/api-keys/not-a-uuid", headers=bob.headers), 422, "validation_error"
        )


class TestProfile:
    async def test_me_and_credits(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        signed = await sign_up(client, session, "me@example.com")
        me = (await client.get("/api/v1/users/me", headers=signed.headers)).json()
        assert me["plan"] == "free"
        assert me["role"] == "user"
        assert me["email_verified"] is True
        assert (await client.get("/api/v1/users/credits", headers=signed.headers)).json() == {
            "credits": 10.0,
            "plan": "free",
        }

    async def test_patch_updates_and_validates(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        alice = await sign_up(client, session, "alice@example.com")
        bob = await sign_up(client, session, "bob@example.com")
        changed = await client.patch(
            "/api/v1/users/me",
            headers=alice.headers,
            json={"name": "Alice", "username": "alice", "photo_url": "https://cdn.example.com/a.png"},
        )
        assert changed.status_code == 200
        assert changed.json()["username"] == "alice"
        assert_error(
            await client.patch("/api/v1/users/me", headers=bob.headers, json={"username": "alice"}),
            409,
            "username_taken",
        )
        for bad in (
            {"username": "a b"},
            {"photo_url": "javascript:alert(1)"},
            {"name": ""},
            {"name": "x\u0000y"},
        ):
            assert_error(
                await client.patch("/api/v1/users/me", headers=bob.headers, json=bad), 422, "validation_error"
            )


class TestPrivacy:
    async def test_export_holds_the_users_data_and_nobody_elses(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        alice = await sign_up(client, session, "alice@example.com")
        await sign_up(client, session, "bob@example.com")
        await client.post("/api/v1/api-keys", headers=alice.headers, json={"name": "ci"})
        exported = (await client.get("/api/v1/users/me/export", headers=alice.headers)).json()
        assert exported["user"]["email"] == "alice@example.com"
        assert exported["credits"] == {"balance": 10.0, "reserved": 0.0}
        assert [entry["reason"] for entry in exported["ledger"]] == ["signup_bonus"]
        assert [key["name"] for key in exported["api_keys"]] == ["ci"]
        assert {email["to"] for email in exported["emails"]} == {"alice@example.com"}
        assert "bob@example.com" not in str(exported)

    async def test_erasure_removes_personal_data_and_keeps_the_ledger(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        alice = await sign_up(client, session, "alice@example.com")
        await client.post("/api/v1/api-keys", headers=alice.headers, json={"name": "ci"})
        user_id = (await client.get("/api/v1/users/me", headers=alice.headers)).json()["id"]
        assert (await client.delete("/api/v1/users/me", headers=alice.headers)).status_code == 204
        session.expunge_all()
        user = await session.get(User, uuid.UUID(user_id))
        assert user is not None
        assert (user.email, user.name, user.password_hash, user.erased_at is not None) == (
            None,
            None,
            None,
            True,
        )
        assert await session.scalar(select(func.count()).select_from(ApiKey)) == 0
        assert await session.scalar(select(func.count()).select_from(OutboxEmail)) == 0
        assert (
            await session.scalar(select(func.count()).select_from(CreditLedgerEntry)) == 1
        )  # kept, anonymous
        live = await session.scalar(
            select(func.count()).select_from(RefreshToken).where(RefreshToken.revoked_at.is_(None))
        )
        assert live == 0
        assert_error(await client.get("/api/v1/users/me", headers=alice.headers), 401, "invalid_token")
        login = await client.post(
            "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert_error(login, 401, "invalid_credentials")
        # The address is free again for a new account.
        assert (await register(client, "alice@example.com")).status_code == 201


class TestRateLimits:
    @pytest.fixture
    def settings(self, database_url: str) -> Settings:
        return make_settings(
            database_url=database_url,
            rate_limit_login_per_ip="4/minute",
            rate_limit_login_per_account="2/minute",
            rate_limit_password_forgot_per_ip="2/minute",
            rate_limit_register_per_ip="2/minute",
        )

    async def test_login_per_account_then_per_ip(self, client: httpx.AsyncClient) -> None:
        attempt = {"email": "target@example.com", "password": "guess-guess"}
        statuses = [(await client.post("/api/v1/auth/login", json=attempt)).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        limited = await client.post("/api/v1/auth/login", json=attempt)
        body = assert_error(limited, 429, "rate_limited")
        assert 0 < int(limited.headers["retry-after"]) <= 60
        assert body["detail"]
        # A different account from the same address hits the per-IP limit.
        other = await client.post(
            "/api/v1/auth/login", json={"email": "other@example.com", "password": "x" * 9}
        )
        assert other.status_code == 429

    async def test_forgot_and_register_are_limited(self, client: httpx.AsyncClient) -> None:
        forgot = [
            (
                await client.post("/api/v1/auth/password/forgot", json={"email": f"{n}@example.com"})
            ).status_code
            for n in range(3)
        ]
        assert forgot == [202, 202, 429]
        registered = [(await register(client, f"r{n}@example.com")).status_code for n in range(3)]
        assert registered == [201, 201, 429]


@pytest.mark.skipif("not __import__('os').environ.get('TEST_REDIS_URL')", reason="needs TEST_REDIS_URL")
@pytest.mark.xdist_group("redis")  # it resets the shared Redis limits: one worker runs them all, in turn
async def test_rate_limits_are_shared_through_redis(database_url: str, database: Database) -> None:
    import os

    settings = make_settings(
        database_url=database_url,
        redis_url=os.environ["TEST_REDIS_URL"],
        rate_limit_login_per_account="1/minute",
    )
    apps: list[tuple[FastAPI, Container]] = []
    for _ in range(2):  # two API processes behind a load balancer
        container = Container.build(settings, database)
        await container.rate_limiter.reset()
        apps.append((create_app(settings, database, container), container))
    statuses = []
    for app, _ in apps:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as client:
            attempt = {"email": f"{uuid.uuid4().hex}@example.com", "password": "guess-guess"}
            statuses.append((await client.post("/api/v1/auth/login", json=attempt)).status_code)
            statuses.append((await client.post("/api/v1/auth/login", json=attempt)).status_code)
    for _, container in apps:
        await container.rate_limiter.reset()
        await container.aclose()
    assert statuses == [401, 429, 401, 429]


class TestCookieSessions:
    @pytest.fixture
    def settings(self, database_url: str) -> Settings:
        return make_settings(database_url=database_url, auth_cookies_enabled=True)

    @pytest.fixture
    async def signed_in(self, client: httpx.AsyncClient, session: AsyncSession) -> AsyncIterator[SignedIn]:
        return await sign_up(client, session, "cookie@example.com")

    async def test_cookie_reads_work_and_writes_need_the_csrf_header(
        self, client: httpx.AsyncClient, signed_in: SignedIn
    ) -> None:
        assert client.cookies.get("pf_access")
        assert (await client.get("/api/v1/users/me")).status_code == 200
        assert_error(await client.patch("/api/v1/users/me", json={"name": "X"}), 403, "csrf_failed")
        wrong = await client.patch("/api/v1/users/me", json={"name": "X"}, headers={"X-CSRF-Token": "nope"})
        assert_error(wrong, 403, "csrf_failed")
        csrf = client.cookies.get("pf_csrf")
        assert csrf
        ok = await client.patch("/api/v1/users/me", json={"name": "X"}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200

    async def test_logout_clears_the_cookies(self, client: httpx.AsyncClient, signed_in: SignedIn) -> None:
        csrf = client.cookies.get("pf_csrf")
        assert csrf
        response = await client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})
        assert response.status_code == 204
        assert "pf_access" not in client.cookies
        assert_error(await client.get("/api/v1/users/me"), 401, "unauthenticated")


async def test_unverified_then_verified_via_reset_is_allowed(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """A password reset proves the address, so it also verifies it."""
    await register(client, "late@example.com")
    await client.post("/api/v1/auth/password/forgot", json={"email": "late@example.com"})
    from tests.support.accounts import last_email_to, token_in

    token = token_in(await last_email_to(session, "late@example.com", "reset_password"))
    await client.post("/api/v1/auth/password/reset", json={"token": token, "password": "another passphrase"})
    signed = await sign_in(client, "late@example.com", "another passphrase")
    me = (await client.get("/api/v1/users/me", headers=signed.headers)).json()
    assert me["email_verified"] is True

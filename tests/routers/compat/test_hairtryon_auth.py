"""The Hair Try-On SPA's account calls under /compat/hairtryon/api/v1, sent as its source sends them
(JSON bodies, `credentials: "include"` cookies, the browser's Origin, never a CSRF header) and checked
for what it reads. Cites are the SPA's files (kevinnadar22/hairtryon @0f5d068, frontend/src/), as
listed in the reference's client table (shared/reference/seed-clients.md §3)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db.base import utcnow
from app.db.session import Database
from app.models import EmailCode, OutboxEmail, User
from tests.conftest import make_settings
from tests.fakes.google import FakeGoogle
from tests.support.accounts import PASSWORD, code_in, last_email_to, past_refresh_grace, register, sign_up
from tests.support.committed import cleanup
from tests.support.http import assert_error

API = "http://testserver"
APP = "https://hairtryon.example.com"
FOREIGN = "https://evil.example.net"
HT = "/compat/hairtryon/api/v1"
SPA = {"Origin": APP}  # a cross-origin fetch always names its origin


@pytest.fixture
def google(outside_http: respx.MockRouter) -> FakeGoogle:
    return FakeGoogle(outside_http)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        cors_origins=[APP],
        frontend_url=APP,
        public_base_url=API,
        login_code_max_attempts=3,
        google_client_id="123.apps.googleusercontent.com",
        google_client_secret="fake-secret",
        rate_limit_code_request_per_ip="1000/hour",
        rate_limit_code_request_per_account="1000/hour",
        rate_limit_code_verify_per_ip="1000/hour",
        rate_limit_verification_per_ip="1000/hour",
    )


def _set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    cookies: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed = SimpleCookie()
        parsed.load(header)
        for name, morsel in parsed.items():
            cookies[name] = {
                "value": morsel.value,
                **{key: str(value) for key, value in morsel.items() if value},
            }
    return cookies


def _replace_cookie(client: httpx.AsyncClient, name: str, value: str) -> None:
    """What the browser would hold instead: the same cookie (domain, path) with another value."""
    stored = [cookie for cookie in client.cookies.jar if cookie.name == name]
    if stored:
        client.cookies.set(name, value, domain=stored[0].domain, path=stored[0].path)
    else:
        client.cookies.set(name, value)


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, str] | None = None) -> httpx.Response:
    return await client.post(f"{HT}{path}", json=body, headers=SPA)


async def _code(session: AsyncSession, email: str, purpose: str) -> str:
    return code_in(await last_email_to(session, email, f"{purpose}_code"))


async def _committed_code(engine: AsyncEngine, email: str, purpose: str) -> str:
    async with AsyncSession(engine) as reader:  # closed at once: SQLite's writers must not wait on it
        return await _code(reader, email, purpose)


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def _signed_up(client: httpx.AsyncClient, session: AsyncSession, email: str) -> None:
    """Signup.tsx:37-45 then VerifySignup.tsx: the session cookies are in the client's jar."""
    token = (
        await _post(client, "/auth/signup", {"email": email, "name": "Ana", "password": PASSWORD})
    ).json()
    verified = await _post(
        client,
        "/auth/verify-signup",
        {"token": token["verify_token"], "code": await _code(session, email, "signup")},
    )
    assert verified.status_code == 200, verified.text


# --- the session gate (contexts/Auth/provider.tsx:46; utils/helpers.ts:15-17) ---------------------


async def test_an_anonymous_visit_is_no_cookies_found(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{HT}/user/me")

    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "NO_COOKIES_FOUND"  # the SPA shows no toast for it


async def test_a_stale_access_cookie_is_not_authenticated_then_refresh_works(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await _signed_up(client, session, "stale@example.com")
    access = client.cookies["access_token"]
    _replace_cookie(client, "access_token", access[:-4] + "AAAA")

    stale = await client.get(f"{HT}/user/me")
    assert stale.status_code == 401
    assert stale.json()["detail"]["code"] == "NOT_AUTHENTICATED"  # request-fn.ts: 401 -> refresh, retry
    refreshed = await _post(client, "/auth/refresh")  # request-fn.ts:19-31: no body, reads res.ok
    assert refreshed.status_code == 200, refreshed.text
    assert set(_set_cookies(refreshed)) == {"access_token", "refresh_token"}
    me = await client.get(f"{HT}/user/me")
    assert me.status_code == 200
    assert me.json()["email"] == "stale@example.com"


async def test_a_reused_refresh_token_ends_the_session_and_clears_the_cookies(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await _signed_up(client, session, "reuse@example.com")
    old_refresh = client.cookies["refresh_token"]
    assert (await _post(client, "/auth/refresh")).status_code == 200
    new_refresh = client.cookies["refresh_token"]
    await past_refresh_grace(session, settings)

    _replace_cookie(client, "refresh_token", old_refresh)
    reused = await _post(client, "/auth/refresh")

    assert reused.status_code == 401
    assert reused.json()["detail"]["code"] == "NOT_AUTHENTICATED"
    assert _set_cookies(reused)["refresh_token"]["max-age"] == "0"
    _replace_cookie(client, "refresh_token", new_refresh)  # the family died with the reuse
    assert (await _post(client, "/auth/refresh")).status_code == 401


@pytest.mark.parametrize("path", ["/auth/refresh", "/auth/logout"])
async def test_a_cookie_post_from_a_foreign_origin_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, path: str
) -> None:
    await _signed_up(client, session, "origin@example.com")
    cookies = dict(client.cookies)

    for headers in ({"Origin": FOREIGN}, {}):  # a cross-site form, or a request naming no origin
        refused = await client.post(f"{HT}{path}", headers=headers)
        assert_error(refused, 403, "csrf_failed")
        assert "set-cookie" not in refused.headers

    assert dict(client.cookies) == cookies
    assert (await _post(client, "/auth/refresh")).status_code == 200  # the refresh token was not spent
    assert (await client.get(f"{HT}/user/me")).status_code == 200


# --- sign-up and sign-in with an emailed code -------------------------------------------------------


@pytest.fixture
async def committed_client(committing: tuple[FastAPI, Database]) -> AsyncIterator[httpx.AsyncClient]:
    app, _ = committing
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as client:
        yield client


async def test_the_spa_signs_up_signs_out_signs_in_and_two_tabs_refresh_at_once(
    committed_client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Really committed, so that the two refreshes run concurrently on every database."""
    client, email = committed_client, f"flow-{uuid.uuid4().hex[:8]}@example.com"
    try:
        signup = await _post(client, "/auth/signup", {"email": email, "name": "Ana", "password": PASSWORD})
        assert signup.status_code == 200, signup.text
        token = signup.json()["verify_token"]  # Signup.tsx:37: data.verify_token
        assert (await _post(client, "/auth/verify-code-token", {"token": token})).json() == {"valid": True}
        code = await _committed_code(engine, email, "signup")
        assert code not in signup.text
        verified = await _post(client, "/auth/verify-signup", {"token": token, "code": code})
        assert verified.status_code == 200, verified.text
        for name, max_age in (("access_token", "600"), ("refresh_token", "604800")):
            cookie = _set_cookies(verified)[name]
            assert (cookie["path"], cookie["samesite"].lower(), cookie["max-age"]) == (
                "/",
                "lax",
                max_age,
            )
            assert "httponly" in cookie
            assert "secure" not in cookie  # plain http here; Secure over https (cookies_secure)

        me = await client.get(f"{HT}/user/me")  # provider.tsx: credits, name, email, userpic
        assert me.status_code == 200
        assert set(me.json()) == {"id", "name", "email", "userpic", "credits"}
        assert (me.json()["name"], me.json()["email"], me.json()["userpic"]) == ("Ana", email, None)
        assert me.json()["credits"] == 10

        logout = await _post(client, "/auth/logout")
        assert logout.status_code == 200
        assert (await client.get(f"{HT}/user/me")).json()["detail"]["code"] == "NO_COOKIES_FOUND"

        login = await _post(client, "/auth/request-login-token", {"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text  # Login.tsx:73-83: data.token
        signed_in = await _post(
            client,
            "/auth/verify-login",
            {"token": login.json()["token"], "code": await _committed_code(engine, email, "login")},
        )
        assert signed_in.status_code == 200, signed_in.text

        tabs = await asyncio.gather(*(_post(client, "/auth/refresh") for _ in range(2)))
        assert [tab.status_code for tab in tabs] == [200, 200], [tab.text for tab in tabs]
        assert all(tab.json() == {"ok": True} for tab in tabs)
        assert (await client.get(f"{HT}/user/me")).status_code == 200
    finally:
        async with engine.begin() as connection:
            user_ids = list(await connection.scalars(select(User.id).where(User.email == email)))
        await cleanup(engine, user_ids, [])
        async with engine.begin() as connection:
            await connection.execute(delete(EmailCode).where(EmailCode.email == email))
            await connection.execute(delete(OutboxEmail).where(OutboxEmail.recipient == email))


async def test_a_wrong_code_counts_until_the_attempts_run_out_then_even_the_right_one_fails(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await sign_up(client, session, "guess@example.com")
    token = (
        await _post(client, "/auth/request-login-token", {"email": "guess@example.com", "password": PASSWORD})
    ).json()["token"]
    code = await _code(session, "guess@example.com", "login")

    for _ in range(settings.login_code_max_attempts):
        wrong = await _post(client, "/auth/verify-login", {"token": token, "code": _wrong(code)})
        assert_error(wrong, 400, "invalid_or_expired_code")  # VerifyLogin.tsx: toasts the detail string

    assert_error(
        await _post(client, "/auth/verify-login", {"token": token, "code": code}),
        400,
        "invalid_or_expired_code",
    )
    assert (await _post(client, "/auth/verify-code-token", {"token": token})).json() == {"valid": False}
    assert "access_token" not in client.cookies


async def test_used_expired_and_other_purpose_code_tokens_are_refused(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await sign_up(client, session, "tokens@example.com")
    client.cookies.clear()
    ask = {"email": "tokens@example.com", "password": PASSWORD}
    used = (await _post(client, "/auth/request-login-token", ask)).json()["token"]
    code = await _code(session, "tokens@example.com", "login")
    assert_error(
        await _post(client, "/auth/verify-signup", {"token": used, "code": code}),
        400,
        "invalid_or_expired_code",
    )
    assert (await _post(client, "/auth/verify-login", {"token": used, "code": code})).status_code == 200
    expired = (await _post(client, "/auth/request-login-token", ask)).json()["token"]
    await session.execute(update(EmailCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    await session.flush()

    for token in (used, expired):  # VerifyLogin.tsx:28-35: valid=false -> "invalid or has expired"
        assert (await _post(client, "/auth/verify-code-token", {"token": token})).json() == {"valid": False}
        refused = await _post(client, "/auth/verify-login", {"token": token, "code": code})
        assert_error(refused, 400, "invalid_or_expired_code")


async def test_login_refusals_lead_the_spa_to_a_resent_signup_code_that_keeps_the_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Login.tsx:52-83: request-login-token fails -> check-email-status -> if not verified,
    request-signup-token {email} -> verify-signup. The sign-up's password survives the resend."""
    email = "pending@example.com"
    await _post(client, "/auth/signup", {"email": email, "name": "Pat", "password": PASSWORD})
    unknown = await _post(client, "/auth/check-email-status", {"email": "nobody@example.com"})
    assert_error(unknown, 404, "user_not_found")

    login = await _post(client, "/auth/request-login-token", {"email": email, "password": PASSWORD})
    assert_error(login, 401, "invalid_credentials")  # no account until the code is entered
    assert (await _post(client, "/auth/check-email-status", {"email": email})).json() == {"verified": False}
    resent = await _post(client, "/auth/request-signup-token", {"email": email})
    assert resent.status_code == 200, resent.text
    verified = await _post(
        client,
        "/auth/verify-signup",
        {"token": resent.json()["token"], "code": await _code(session, email, "signup")},
    )
    assert verified.status_code == 200, verified.text

    assert (await _post(client, "/auth/check-email-status", {"email": email})).json() == {"verified": True}
    assert_error(await _post(client, "/auth/request-signup-token", {"email": email}), 400, "already_verified")
    client.cookies.clear()
    again = await _post(client, "/auth/request-login-token", {"email": email, "password": PASSWORD})
    assert again.status_code == 200, again.text
    user = await session.scalar(select(User).where(User.email == email))
    assert user is not None
    assert user.name == "Pat"


async def test_a_resent_code_for_an_unverified_account_keeps_this_browsers_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Someone registered the address (natively, never verified). The owner signs up in the SPA and
    asks for the code again: the code proves the address, the sign-up's password (carried by the
    resend) becomes the account's, and the registrant's stops working."""
    email = "squatted@example.com"
    await register(client, email, password="squatters password")
    await _post(client, "/auth/signup", {"email": email, "name": "Sam", "password": PASSWORD})
    resent = await _post(client, "/auth/request-signup-token", {"email": email})
    code = await _code(session, email, "signup")

    verified = await _post(client, "/auth/verify-signup", {"token": resent.json()["token"], "code": code})
    assert verified.status_code == 200, verified.text

    client.cookies.clear()
    owner = await _post(client, "/auth/request-login-token", {"email": email, "password": PASSWORD})
    assert owner.status_code == 200, owner.text
    squatter = {"email": email, "password": "squatters password"}
    assert_error(await _post(client, "/auth/request-login-token", squatter), 401, "invalid_credentials")


# --- the password reset link ------------------------------------------------------------------------


async def test_forgot_then_reset_the_password(client: httpx.AsyncClient, session: AsyncSession) -> None:
    email = "reset@example.com"
    await sign_up(client, session, email)
    client.cookies.clear()
    forgot = await _post(client, "/auth/forgot-password", {"email": email})
    assert forgot.status_code == 200
    link = (await last_email_to(session, email, "reset_password")).text_body
    match = re.search(rf"{re.escape(APP)}/reset-password\?token=([A-Za-z0-9_\-]+)", link)
    assert match, link  # the SPA's own page reads ?token= (ResetPassword.tsx:20)
    token = match.group(1)
    new_password = "a brand new secret"

    assert (await _post(client, "/auth/verify-reset-token", {"token": token})).json() == {"valid": True}
    mismatch = await _post(
        client,
        "/auth/reset-password",
        {"token": token, "new_password": new_password, "confirm_password": "other one"},
    )
    assert mismatch.status_code == 422  # helpers.ts:1-12 shows detail[0].msg
    reset = await _post(
        client,
        "/auth/reset-password",
        {"token": token, "new_password": new_password, "confirm_password": new_password},
    )
    assert reset.status_code == 200, reset.text  # ResetPassword.tsx:67 -> navigate("/login")

    assert (await _post(client, "/auth/verify-reset-token", {"token": token})).json() == {"valid": False}
    reused = await _post(
        client,
        "/auth/reset-password",
        {"token": token, "new_password": new_password, "confirm_password": new_password},
    )
    assert_error(reused, 400, "invalid_or_expired_token")
    login = await _post(client, "/auth/request-login-token", {"email": email, "password": new_password})
    assert login.status_code == 200, login.text


# --- Google in a popup (hooks/useGoogleAuth.ts, pages/GoogleCallback.tsx) ---------------------------


async def _google_popup(
    client: httpx.AsyncClient, google: FakeGoogle, *, deny: bool = False
) -> dict[str, list[str]]:
    start = await client.get(f"{HT}/auth/google")
    assert start.status_code == 302
    consent = start.headers["location"]
    callback = urlsplit(google.deny(consent) if deny else google.authorize(consent, email="pop@example.com"))
    answer = await client.get(f"{callback.path}?{callback.query}")
    assert answer.status_code == 302, answer.text
    target = urlsplit(answer.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{APP}/auth/callback"
    return parse_qs(target.query)


async def test_google_in_a_popup_sets_the_cookies_and_lands_on_the_spas_callback(
    client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    assert await _google_popup(client, google) == {"success": ["true"]}

    # The compat callback is its own redirect_uri; the native one keeps GOOGLE_REDIRECT_URI.
    assert google.token_requests[0]["redirect_uri"] == f"{API}{HT}/auth/google/callback"
    me = await client.get(f"{HT}/user/me")
    assert me.status_code == 200
    assert me.json()["email"] == "pop@example.com"


async def test_a_denied_google_consent_lands_on_the_callback_with_an_error(
    client: httpx.AsyncClient, google: FakeGoogle
) -> None:
    assert await _google_popup(client, google, deny=True) == {"error": ["google_sign_in_failed"]}
    assert "access_token" not in client.cookies

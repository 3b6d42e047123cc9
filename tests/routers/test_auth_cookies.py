"""Cookie sessions the Hair Try-On way: `?cookies=true` puts the session in httpOnly `access_token` /
`refresh_token` cookies; reads authenticate by them, writes must also name an allowed Origin (or
Referer); refresh and logout work from the cookies; a bearer request never looks at them."""

from __future__ import annotations

from http.cookies import SimpleCookie

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Environment, Settings
from app.models import User
from tests.conftest import make_settings
from tests.support.accounts import PASSWORD, SignedIn, code_in, last_email_to, sign_up
from tests.support.http import assert_error

# Nothing here depends on the database: one run, on SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

APP = "https://app.example.com"
FOREIGN = "https://evil.example.net"
ME = "/api/v1/users/me"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url=database_url, cors_origins=[APP])


def _set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    """Each Set-Cookie of the answer: name -> attributes (lower-cased names; flags map to "")."""
    cookies: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed = SimpleCookie()
        parsed.load(header)
        for name, morsel in parsed.items():
            attributes = {key: str(value) for key, value in morsel.items() if value}
            cookies[name] = {"value": morsel.value, **attributes}
    return cookies


async def _cookie_login(client: httpx.AsyncClient, session: AsyncSession, email: str) -> httpx.Response:
    await sign_up(client, session, email)
    client.cookies.clear()
    response = await client.post(
        "/api/v1/auth/login?cookies=true", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return response


async def test_login_sets_the_session_cookies_and_keeps_the_tokens_out_of_the_body(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await _cookie_login(client, session, "cookie@example.com")

    assert response.json() == {"token_type": "cookie", "expires_in": 600, "refresh_expires_in": 604800}
    cookies = _set_cookies(response)
    access, refresh = cookies["access_token"], cookies["refresh_token"]
    for cookie, max_age in ((access, "600"), (refresh, "604800")):
        assert cookie["max-age"] == max_age
        assert cookie["path"] == "/"
        assert cookie["samesite"].lower() == "lax"
        assert "httponly" in cookie
        assert "secure" not in cookie  # served over http in this test
    assert "pf_access" not in cookies


@pytest.mark.parametrize(
    "overrides", [{"environment": Environment.production}, {"public_base_url": "https://api.example.com"}]
)
def test_session_cookies_are_secure_over_https(database_url: str, overrides: dict[str, object]) -> None:
    from fastapi import Response

    from app.dependencies import set_session_cookies
    from app.services.auth import TokenPair

    settings = make_settings(
        database_url=database_url, secret_key="x" * 40, auth_cookie_domain="example.com", **overrides
    )
    response = Response()
    set_session_cookies(response, TokenPair("a", "r", 600, 604800), settings)
    headers = [value.decode() for key, value in response.raw_headers if key == b"set-cookie"]
    assert len(headers) == 2
    assert all("Secure" in header and "Domain=example.com" in header for header in headers)


class TestCookieAuthenticatedRequests:
    @pytest.fixture
    async def signed_in(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        await _cookie_login(client, session, "browser@example.com")

    @pytest.mark.usefixtures("signed_in")
    async def test_reads_need_no_origin(self, client: httpx.AsyncClient) -> None:
        me = await client.get(ME)
        assert me.status_code == 200
        assert me.json()["email"] == "browser@example.com"

    @pytest.mark.usefixtures("signed_in")
    @pytest.mark.parametrize(
        "headers",
        [{"Origin": APP}, {"Origin": APP.upper()}, {"Referer": f"{APP}/profile?tab=1"}],
    )
    async def test_a_write_from_an_allowed_origin_goes_through(
        self, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await client.patch(ME, json={"name": "Allowed"}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "Allowed"

    @pytest.mark.usefixtures("signed_in")
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Origin": FOREIGN},
            {"Origin": "null"},
            {"Origin": f"{APP}.evil.example.net"},
            {"Origin": "http://app.example.com"},  # another scheme is another origin
            {"Referer": f"{FOREIGN}/page"},
            {"Origin": FOREIGN, "Referer": f"{APP}/page"},  # Origin, when sent, decides
            {"Referer": "not a url"},
        ],
    )
    async def test_a_write_from_a_foreign_or_unnamed_origin_is_refused_and_changes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, headers: dict[str, str]
    ) -> None:
        refused = await client.patch(ME, json={"name": "Forged"}, headers=headers)
        assert_error(refused, 403, "csrf_failed")
        session.expunge_all()
        user = await session.scalar(select(User).where(User.email == "browser@example.com"))
        assert user is not None
        assert user.name != "Forged"

    async def test_bearer_requests_ignore_the_origin_rule(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        signed: SignedIn = await sign_up(client, session, "api@example.com")  # no cookies
        client.cookies.clear()
        response = await client.patch(
            ME, json={"name": "Script"}, headers={**signed.headers, "Origin": FOREIGN}
        )
        assert response.status_code == 200
        # With a cookie session in the same jar, the header still decides who calls.
        await _cookie_login(client, session, "cookie-too@example.com")
        me = await client.get(ME, headers={**signed.headers, "Origin": FOREIGN})
        assert me.json()["email"] == "api@example.com"

    @pytest.mark.usefixtures("signed_in")
    async def test_refresh_from_the_cookie_rotates_the_cookies(self, client: httpx.AsyncClient) -> None:
        old_access = client.cookies.get("access_token")
        assert_error(await client.post("/api/v1/auth/refresh"), 403, "csrf_failed")
        assert_error(
            await client.post("/api/v1/auth/refresh", headers={"Origin": FOREIGN}), 403, "csrf_failed"
        )

        response = await client.post("/api/v1/auth/refresh", headers={"Origin": APP})

        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "cookie"
        assert "access_token" not in response.json()
        assert set(_set_cookies(response)) == {"access_token", "refresh_token"}
        assert client.cookies.get("access_token") != old_access
        assert (await client.get(ME)).status_code == 200

    @pytest.mark.usefixtures("signed_in")
    async def test_logout_clears_the_cookies_and_ends_the_session(self, client: httpx.AsyncClient) -> None:
        refresh_token = client.cookies.get("refresh_token")
        assert refresh_token
        assert_error(
            await client.post("/api/v1/auth/logout", headers={"Origin": FOREIGN}), 403, "csrf_failed"
        )

        response = await client.post("/api/v1/auth/logout", headers={"Origin": APP})

        assert response.status_code == 204
        cleared = _set_cookies(response)
        assert cleared["access_token"]["max-age"] == "0"
        assert cleared["refresh_token"]["max-age"] == "0"
        assert "access_token" not in client.cookies
        assert_error(await client.get(ME), 401, "unauthenticated")
        replayed = await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
        assert_error(replayed, 401, "invalid_token")


async def test_a_code_sign_in_can_set_the_cookies(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await sign_up(client, session, "code-cookie@example.com")
    client.cookies.clear()
    asked = await client.post(
        "/api/v1/auth/code/request", json={"email": "code-cookie@example.com", "purpose": "login"}
    )
    code = code_in(await last_email_to(session, "code-cookie@example.com", "login_code"))

    response = await client.post(
        "/api/v1/auth/code/verify?cookies=true", json={"token": asked.json()["token"], "code": code}
    )

    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "cookie"
    assert {"access_token", "refresh_token"} <= set(_set_cookies(response))
    assert (await client.get(ME)).status_code == 200

"""Admin operations on accounts over HTTP: search with balances, ban (every credential of the account
stops working at once) and unban, each audited."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.dependencies import ACCESS_COOKIE
from app.models import AuditLog, User
from tests.factories import bearer, make_api_key, make_user
from tests.support.accounts import PASSWORD, sign_up
from tests.support.http import assert_error


async def test_admins_search_accounts_with_their_balances(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    admin = await make_user(session, settings, role="admin", email="root@ops.example")
    headers = bearer(container, admin)
    alice = await make_user(session, settings, email="alice_1@corp.example", plan="pro")
    await make_user(session, settings, email="alicex1@corp.example")
    await make_user(session, settings, email="bob@home.example")
    await client.post(
        f"/api/v1/admin/users/{alice.id}/credits", headers=headers, json={"amount": "2.5", "note": "gift"}
    )

    url = "/api/v1/admin/users"
    found = (await client.get(url, headers=headers, params={"email": "ALICE_"})).json()["items"]
    # "_" is a literal underscore, not LIKE's any-character.
    assert [(item["email"], item["plan"], item["credits"]) for item in found] == [
        ("alice_1@corp.example", "pro", 12.5)
    ]
    assert found[0]["banned"] is False
    pro = (await client.get(url, headers=headers, params={"plan": "pro"})).json()["items"]
    assert [item["email"] for item in pro] == ["alice_1@corp.example"]

    emails: list[str] = []
    cursor = None
    while True:
        params = {"email": ".example", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(url, headers=headers, params=params)).json()
        emails += [item["email"] for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(emails) == sorted(
        ["root@ops.example", "alice_1@corp.example", "alicex1@corp.example", "bob@home.example"]
    )
    assert len(set(emails)) == 4
    future = (utcnow() + timedelta(days=1)).isoformat()
    assert (await client.get(url, headers=headers, params={"created_from": future})).json()["items"] == []
    later = await client.get(url, headers=headers, params={"created_to": future, "email": "bob"})
    assert [item["email"] for item in later.json()["items"]] == ["bob@home.example"]
    assert_error(
        await client.get(url, headers=headers, params={"created_to": "2026-01-01"}), 422, "validation_error"
    )
    assert_error(await client.get(url, headers=headers, params={"cursor": "%%%"}), 400, "invalid_cursor")


async def test_a_ban_stops_every_credential_at_once_and_an_unban_lets_the_account_sign_in(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    admin = await make_user(session, settings, role="admin")
    admin_headers = bearer(container, admin)
    signed = await sign_up(client, session, "banned@example.com")
    me = (await client.get("/api/v1/users/me", headers=signed.headers)).json()
    user_id = me["id"]
    user = await session.get(User, uuid.UUID(user_id))
    assert user is not None
    key_headers = await make_api_key(session, user)
    cookie = {"Cookie": f"{ACCESS_COOKIE}={signed.access_token}"}
    assert (await client.get("/api/v1/users/me", headers=key_headers)).status_code == 200
    assert (await client.get("/api/v1/users/me", headers=cookie)).status_code == 200

    banned = await client.post(
        f"/api/v1/admin/users/{user_id}/ban", headers=admin_headers, json={"reason": "chargebacks"}
    )
    assert banned.status_code == 200, banned.text
    assert banned.json()["banned"] is True
    client.cookies.clear()
    for headers in (signed.headers, key_headers, cookie):
        assert_error(await client.get("/api/v1/users/me", headers=headers), 401, "invalid_token")
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": signed.refresh_token})
    assert_error(refreshed, 401, "invalid_token")
    login = await client.post(
        "/api/v1/auth/login", json={"email": "banned@example.com", "password": PASSWORD}
    )
    assert_error(login, 401, "invalid_credentials")
    listed = await client.get("/api/v1/admin/users", headers=admin_headers, params={"email": "banned@"})
    assert listed.json()["items"][0]["banned"] is True

    unbanned = await client.post(f"/api/v1/admin/users/{user_id}/unban", headers=admin_headers)
    assert unbanned.json()["banned"] is False
    client.cookies.clear()
    assert_error(await client.get("/api/v1/users/me", headers=signed.headers), 401, "invalid_token")
    login = await client.post(
        "/api/v1/auth/login", json={"email": "banned@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200
    assert (await client.get("/api/v1/users/me", headers=key_headers)).status_code == 200

    session.expunge_all()
    rows = list(
        await session.scalars(
            select(AuditLog)
            .where(AuditLog.action.in_(["user.banned", "user.unbanned"]))
            .order_by(AuditLog.created_at)
        )
    )
    assert [(row.action, row.actor_id, str(row.subject_id)) for row in rows] == [
        ("user.banned", admin.id, user_id),
        ("user.unbanned", admin.id, user_id),
    ]
    assert rows[0].details == {"reason": "chargebacks"}


async def test_ban_refusals(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    admin = await make_user(session, settings, role="admin")
    headers = bearer(container, admin)
    assert_error(
        await client.post(f"/api/v1/admin/users/{admin.id}/ban", headers=headers), 409, "cannot_ban_yourself"
    )
    missing = "00000000-0000-0000-0000-000000000000"
    assert_error(await client.post(f"/api/v1/admin/users/{missing}/ban", headers=headers), 404, "not_found")
    assert_error(await client.post(f"/api/v1/admin/users/{missing}/unban", headers=headers), 404, "not_found")
    target = await make_user(session, settings)
    long_reason = {"reason": "x" * 201}
    assert_error(
        await client.post(f"/api/v1/admin/users/{target.id}/ban", headers=headers, json=long_reason),
        422,
        "validation_error",
    )

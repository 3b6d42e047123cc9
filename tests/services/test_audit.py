"""The audit trail over HTTP: each security or money event leaves one row in its own transaction (a
failed login's row survives the 401), no row holds a secret, admins page through it with filters, users
see their own activity, and the sweep applies the retention."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.models import AuditLog, User
from app.services import audit
from app.tasks import maintenance
from tests.factories import bearer, make_user
from tests.support.accounts import PASSWORD, last_email_to, register, sign_in, sign_up, token_in
from tests.support.http import assert_error


async def _rows(session: AsyncSession, action: str | None = None) -> list[AuditLog]:
    session.expunge_all()
    statement = select(AuditLog).order_by(AuditLog.created_at, AuditLog.id)
    if action is not None:
        statement = statement.where(AuditLog.action == action)
    return list(await session.scalars(statement))


async def test_a_failed_login_is_on_record_although_the_request_failed(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    signed = await sign_up(client, session, "audited@example.com")
    refused = await client.post(
        "/api/v1/auth/login", json={"email": "audited@example.com", "password": "wrong password!"}
    )
    assert_error(refused, 401, "invalid_credentials")
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "whatever123"}
    )
    assert_error(unknown, 401, "invalid_credentials")
    failed = await _rows(session, "login.failed")
    me = (await client.get("/api/v1/users/me", headers=signed.headers)).json()
    assert [(row.subject_id is not None, row.details["reason"]) for row in failed] == [
        (True, "invalid_credentials"),
        (False, "invalid_credentials"),
    ]
    assert str(failed[0].subject_id) == me["id"]
    assert failed[0].request_id == refused.headers["x-request-id"]
    assert failed[0].ip
    succeeded = await _rows(session, "login.succeeded")
    assert [str(row.actor_id) for row in succeeded] == [me["id"]]


async def test_no_row_holds_a_password_token_or_key(client: httpx.AsyncClient, session: AsyncSession) -> None:
    signed = await sign_up(client, session, "secrets@example.com")
    await client.post(
        "/api/v1/auth/login", json={"email": "secrets@example.com", "password": "typo-password"}
    )
    # A password typed in the email field is not kept either.
    await client.post("/api/v1/auth/login", json={"email": "hunter2hunter2@x.io", "password": PASSWORD})
    created = await client.post("/api/v1/api-keys", headers=signed.headers, json={"name": "ci"})
    assert created.status_code == 201, created.text
    key = created.json()
    revoked = await client.delete(f"/api/v1/api-keys/{key['id']}", headers=signed.headers)
    assert revoked.status_code == 204
    await client.post("/api/v1/auth/password/forgot", json={"email": "secrets@example.com"})
    reset_token = token_in(await last_email_to(session, "secrets@example.com", "reset_password"))
    new_password = "a whole new passphrase"
    reset = await client.post(
        "/api/v1/auth/password/reset", json={"token": reset_token, "password": new_password}
    )
    assert reset.status_code == 200
    fresh = await sign_in(client, "secrets@example.com", new_password)
    assert (await client.get("/api/v1/users/me/export", headers=fresh.headers)).status_code == 200

    rows = await _rows(session)
    actions = [row.action for row in rows]
    for expected in (
        "login.succeeded",
        "login.failed",
        "api_key.created",
        "api_key.revoked",
        "password_reset.requested",
        "password_reset.completed",
        "account.exported",
    ):
        assert expected in actions, actions
    dumped = json.dumps([[row.action, row.ip, row.request_id, row.details] for row in rows])
    secrets = [PASSWORD, "typo-password", "hunter2hunter2", new_password, reset_token, key["key"]]
    secrets += [signed.access_token, signed.refresh_token, fresh.access_token, fresh.refresh_token]
    for secret in secrets:
        assert secret not in dumped
    # Every row written for a request carries the caller's address, API key rows included.
    assert {(row.action, row.ip) for row in rows if row.action.startswith("api_key.")} == {
        ("api_key.created", "127.0.0.1"),
        ("api_key.revoked", "127.0.0.1"),
    }


async def test_admins_page_and_filter_the_trail_and_users_see_their_own_activity(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    admin = await make_user(session, settings, role="admin")
    target, other = await make_user(session, settings), await make_user(session, settings)
    for user in (target, target, target, other):
        await client.post(
            f"/api/v1/admin/users/{user.id}/credits",
            headers=bearer(container, admin),
            json={"amount": 1, "note": "thanks"},
        )
    url = "/api/v1/admin/audit-logs"
    headers = bearer(container, admin)
    first = await client.get(url, headers=headers, params={"subject": str(target.id), "limit": 2})
    assert first.status_code == 200, first.text
    second = await client.get(
        url,
        headers=headers,
        params={"subject": str(target.id), "limit": 2, "cursor": first.json()["next_cursor"]},
    )
    items = first.json()["items"] + second.json()["items"]
    assert second.json()["next_cursor"] is None
    assert len(items) == 3
    assert {(item["action"], item["actor_id"], item["details"]["amount"]) for item in items} == {
        ("credits.adjusted", str(admin.id), 1000)
    }
    by_action = await client.get(
        url, headers=headers, params={"action": "credits.adjusted", "actor": str(admin.id)}
    )
    assert len(by_action.json()["items"]) == 4
    future = (utcnow() + timedelta(days=1)).isoformat()
    assert (await client.get(url, headers=headers, params={"from": future})).json()["items"] == []
    assert len((await client.get(url, headers=headers, params={"to": future})).json()["items"]) == 4
    assert_error(
        await client.get(url, headers=headers, params={"from": "2026-01-01T00:00:00"}),
        422,
        "validation_error",
    )
    assert_error(
        await client.get(url, headers=headers, params={"cursor": "not-a-cursor"}), 400, "invalid_cursor"
    )

    activity = await client.get("/api/v1/users/me/activity", headers=bearer(container, target))
    assert activity.status_code == 200
    assert [item["action"] for item in activity.json()["items"]] == ["credits.adjusted"] * 3
    mine = await client.get("/api/v1/users/me/activity", headers=bearer(container, other))
    assert len(mine.json()["items"]) == 1
    assert_error(await client.get("/api/v1/users/me/activity"), 401, "unauthenticated")


async def test_the_sweep_keeps_the_trail_for_its_retention(session: AsyncSession, user: User) -> None:
    old = await audit.record(session, action="login.succeeded", subject_id=user.id)
    old.created_at = utcnow() - timedelta(days=400)
    young = await audit.record(session, action="login.succeeded", subject_id=user.id)
    young.created_at = utcnow() - timedelta(days=300)
    await session.flush()
    assert await audit.sweep_expired(session, 0) == 0
    assert await audit.sweep_expired(session, 365) == 1
    assert [row.id for row in await _rows(session)] == [young.id]


async def test_the_housekeeping_round_applies_the_audit_retention(
    session: AsyncSession, container: Container, user: User
) -> None:
    old = await audit.record(session, action="login.succeeded", subject_id=user.id)
    old.created_at = utcnow() - timedelta(days=container.settings.audit_log_retention_days + 1)
    kept = await audit.record(session, action="login.succeeded", subject_id=user.id)
    await session.flush()
    await maintenance.run_once(container)
    assert [row.id for row in await _rows(session)] == [kept.id]


async def test_an_erased_account_stays_on_record(client: httpx.AsyncClient, session: AsyncSession) -> None:
    signed = await sign_up(client, session, "leaving@example.com")
    me = (await client.get("/api/v1/users/me", headers=signed.headers)).json()
    assert (await client.delete("/api/v1/users/me", headers=signed.headers)).status_code == 204
    rows = await _rows(session, "account.deleted")
    assert [str(row.subject_id) for row in rows] == [me["id"]]
    assert "leaving@example.com" not in json.dumps([row.details for row in rows])


async def test_a_sign_in_before_verification_is_on_record(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    registered = await register(client, "unverified@example.com")
    assert registered.status_code == 201
    refused = await client.post(
        "/api/v1/auth/login", json={"email": "unverified@example.com", "password": PASSWORD}
    )
    assert_error(refused, 403, "email_not_verified")
    rows = await _rows(session, "login.failed")
    assert [(str(row.subject_id), row.details["reason"]) for row in rows] == [
        (registered.json()["id"], "email_not_verified")
    ]

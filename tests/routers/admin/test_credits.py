from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.models import CreditLedgerEntry, User
from tests.factories import bearer, make_user
from tests.support.http import assert_error


async def _user(
    session: AsyncSession, settings: Settings, container: Container, *, admin: bool = False
) -> tuple[User, dict[str, str]]:
    user = await make_user(session, settings, role="admin" if admin else "user")
    return user, bearer(container, user)


async def test_admin_grants_and_takes_credits(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    _, admin_headers = await _user(session, settings, container, admin=True)
    target, target_headers = await _user(session, settings, container)
    url = f"/api/v1/admin/users/{target.id}/credits"
    granted = await client.post(url, headers=admin_headers, json={"amount": "2.5", "note": "goodwill"})
    assert granted.status_code == 200
    assert granted.json()["amount"] == 2.5
    taken = await client.post(url, headers=admin_headers, json={"amount": -0.5, "note": "correction"})
    assert taken.json()["balance_after"] == 12.0
    assert (await client.get("/api/v1/users/credits", headers=target_headers)).json()["credits"] == 12.0
    too_much = await client.post(url, headers=admin_headers, json={"amount": -100, "note": "x"})
    body = assert_error(too_much, 402, "insufficient_credits")
    assert (body["required"], body["available"]) == (100.0, 12.0)


async def test_an_idempotent_adjustment_applies_once(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    _, admin_headers = await _user(session, settings, container, admin=True)
    target, _ = await _user(session, settings, container)
    url = f"/api/v1/admin/users/{target.id}/credits"
    headers = {**admin_headers, "Idempotency-Key": "adj-1"}
    first = await client.post(url, headers=headers, json={"amount": 1, "note": "once"})
    second = await client.post(url, headers=headers, json={"amount": 1, "note": "once"})
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    rows = await session.scalars(
        select(CreditLedgerEntry).where(CreditLedgerEntry.reason == "admin_adjustment")
    )
    assert len(list(rows)) == 1
    other = await client.post(url, headers=headers, json={"amount": 2, "note": "once"})
    assert_error(other, 409, "idempotency_key_reused")


async def test_only_admins_and_valid_input(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    target, target_headers = await _user(session, settings, container)
    _, admin_headers = await _user(session, settings, container, admin=True)
    url = f"/api/v1/admin/users/{target.id}/credits"
    assert_error(
        await client.post(url, headers=target_headers, json={"amount": 1, "note": "me"}), 403, "forbidden"
    )
    missing = f"/api/v1/admin/users/{uuid.uuid4()}/credits"
    assert_error(
        await client.post(missing, headers=admin_headers, json={"amount": 1, "note": "x"}), 404, "not_found"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 0, "note": "x"},
        {"amount": "0.0001", "note": "x"},
        {"amount": 1, "note": ""},
        {"amount": "1E+999999999999999999", "note": "overflow"},
        {"amount": "1e-999999999999999999", "note": "rounds to nothing"},
        {"amount": "-1E+999999999999999999", "note": "overflow"},
        {"amount": "NaN", "note": "x"},
        {"amount": "Infinity", "note": "x"},
        {"amount": "10000000.001", "note": "just over the limit"},
        {"amount": 1e300, "note": "a float"},
        {"amount": "abc", "note": "x"},
    ],
    ids=repr,
)
async def test_an_invalid_adjustment_is_422_and_moves_nothing(
    body: dict[str, object],
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
) -> None:
    target, target_headers = await _user(session, settings, container)
    _, admin_headers = await _user(session, settings, container, admin=True)
    before = (await client.get("/api/v1/users/credits", headers=target_headers)).json()

    answer = await client.post(f"/api/v1/admin/users/{target.id}/credits", headers=admin_headers, json=body)

    assert_error(answer, 422, "validation_error")
    assert (await client.get("/api/v1/users/credits", headers=target_headers)).json() == before

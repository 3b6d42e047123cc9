"""Plans and prices managed over HTTP: admins create, edit and retire plans; GET /plans shows the ones on
sale; a retired plan takes no new checkouts but its open orders and subscription renewals keep working
(paid through the fake Stripe); every change is audited. Amounts are millicredits."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.models import AuditLog
from tests.factories import bearer, make_user
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.http import assert_error
from tests.support.payments import (
    BONUS,
    CHECKOUT,
    PLANS,
    STRIPE_WEBHOOK,
    SUBSCRIBE,
    balance,
    order_of,
    payment_settings,
    plan_of,
    post_webhook,
    send_stripe,
)

URL = "/api/v1/admin/plans"

STUDIO = {
    "code": "studio",
    "name": "Studio",
    "description": "200 credits every month",
    "kind": "subscription",
    "credits": "200",
    "grants_plan": "pro",
    "interval": "month",
    "prices": [{"currency": "USD", "amount": 1999}, {"currency": "INR", "amount": 149_900}],
}
MINI = {
    "code": "mini",
    "name": "Mini",
    "kind": "credit_pack",
    "credits": 50.5,
    "prices": [{"currency": "USD", "amount": 299}],
}


@pytest.fixture
def settings(
    database_url: str, fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo
) -> Settings:
    return payment_settings(database_url, fake_stripe, fake_razorpay, fake_dodo)


@pytest.fixture
async def admin(session: AsyncSession, settings: Settings, container: Container) -> dict[str, str]:
    return bearer(container, await make_user(session, settings, role="admin"))


async def _create(client: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(URL, headers=admin, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _on_sale(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {plan["code"]: plan for plan in (await client.get(PLANS)).json()}


async def test_a_retired_plan_takes_no_new_checkouts_but_its_orders_and_renewals_still_credit(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    admin: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    studio = await _create(client, admin, STUDIO)
    mini = await _create(client, admin, MINI)
    assert (studio["credits"], studio["is_active"], studio["interval"]) == (200, True, "month")
    assert studio["prices"] == [{"currency": "INR", "amount": 149_900}, {"currency": "USD", "amount": 1999}]
    assert mini["credits"] == 50.5
    on_sale = await _on_sale(client)
    assert on_sale["mini"]["prices"][0]["amount"] == 299
    assert on_sale["studio"]["credits"] == 200

    # Bought while on sale; paid only after the plans are retired.
    subscribed = await client.post(SUBSCRIBE, json={"plan_id": "studio"}, headers=auth)
    assert subscribed.status_code == 200, subscribed.text
    pack = await client.post(CHECKOUT, json={"plan_id": "mini", "provider": "stripe"}, headers=auth)
    assert pack.status_code == 200, pack.text

    for plan in (studio, mini):
        retired = await client.post(f"{URL}/{plan['id']}/retire", headers=admin)
        assert retired.status_code == 200, retired.text
        assert retired.json()["is_active"] is False
    assert {"studio", "mini"}.isdisjoint(await _on_sale(client))
    listed = {plan["code"]: plan for plan in (await client.get(URL, headers=admin)).json()}
    assert (listed["studio"]["is_active"], listed["mini"]["is_active"], listed["basic"]["is_active"]) == (
        False,
        False,
        True,
    )
    assert_error(
        await client.post(CHECKOUT, json={"plan_id": "mini", "provider": "stripe"}, headers=auth),
        404,
        "not_found",
    )
    assert_error(await client.post(SUBSCRIBE, json={"plan_id": "studio"}, headers=auth), 404, "not_found")

    await send_stripe(client, fake_stripe, fake_stripe.checkout_completed(pack.json()["session_id"]))
    assert (await order_of(client, auth, pack.json()["order_id"]))["status"] == "paid"
    assert await balance(client, auth) == BONUS + 50_500

    completed = fake_stripe.checkout_completed(subscribed.json()["session_id"])
    await send_stripe(client, fake_stripe, completed)
    renewal = fake_stripe.invoice_paid(str(completed["data"]["object"]["subscription"]))
    response = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(renewal))
    assert response.json() == {"status": "processed"}, response.text
    assert await balance(client, auth) == BONUS + 50_500 + 200_000
    assert await plan_of(client, auth) == "pro"


async def test_admins_edit_prices_and_put_a_plan_back_on_sale(
    client: httpx.AsyncClient, session: AsyncSession, admin: dict[str, str]
) -> None:
    mini = await _create(client, admin, MINI)
    url = f"{URL}/{mini['id']}"
    await client.post(f"{url}/retire", headers=admin)
    edited = await client.patch(
        url,
        headers=admin,
        json={
            "name": "Mini+",
            "credits": 60,
            "is_active": True,
            "prices": [{"currency": "EUR", "amount": 349}],
        },
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["name"], edited.json()["credits"], edited.json()["code"]) == ("Mini+", 60, "mini")
    assert edited.json()["description"] is None  # not sent, not changed
    on_sale = (await _on_sale(client))["mini"]
    assert (on_sale["name"], on_sale["credits"]) == ("Mini+", 60)
    assert [(price["currency"], price["amount"]) for price in on_sale["prices"]] == [("EUR", 349)]

    session.expunge_all()
    trail = await session.scalars(
        select(AuditLog.action).where(AuditLog.action.like("plan.%")).order_by(AuditLog.created_at)
    )
    assert list(trail) == ["plan.created", "plan.retired", "plan.updated"]


BAD_PLANS = [
    pytest.param({**MINI, "code": "Mini Pack"}, "validation_error", id="code-not-a-slug"),
    pytest.param({**MINI, "credits": 0}, "validation_error", id="no-credits"),
    pytest.param({**MINI, "credits": "1.0005"}, "validation_error", id="credits-4-places"),
    pytest.param({**MINI, "kind": "lifetime"}, "validation_error", id="unknown-kind"),
    pytest.param(
        {**MINI, "prices": [{"currency": "USD", "amount": 1}, {"currency": "USD", "amount": 2}]},
        "validation_error",
        id="two-prices-one-currency",
    ),
    pytest.param({**MINI, "prices": [{"currency": "usd", "amount": 1}]}, "validation_error", id="currency"),
    pytest.param({**MINI, "prices": [{"currency": "USD", "amount": 0}]}, "validation_error", id="free"),
    pytest.param({**MINI, "interval": "month"}, "invalid_plan", id="pack-with-interval"),
    pytest.param({**STUDIO, "interval": None}, "invalid_plan", id="subscription-without-interval"),
]


@pytest.mark.parametrize(("body", "error"), BAD_PLANS)
async def test_plan_input_is_checked_and_nothing_is_created(
    client: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any], error: str
) -> None:
    before = (await client.get(URL, headers=admin)).json()
    assert_error(await client.post(URL, headers=admin, json=body), 422, error)
    assert (await client.get(URL, headers=admin)).json() == before


async def test_codes_are_unique_and_updates_are_checked(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    assert_error(
        await client.post(URL, headers=admin, json={**MINI, "code": "basic"}), 409, "plan_code_taken"
    )
    studio = await _create(client, admin, STUDIO)
    url = f"{URL}/{studio['id']}"
    await client.post(f"{url}/retire", headers=admin)
    # A retired plan keeps its code.
    assert_error(await client.post(URL, headers=admin, json=STUDIO), 409, "plan_code_taken")

    assert_error(await client.patch(url, headers=admin, json={"interval": None}), 422, "invalid_plan")
    assert_error(await client.patch(url, headers=admin, json={"credits": None}), 422, "validation_error")
    assert_error(await client.patch(url, headers=admin, json={"code": "other"}), 422, "validation_error")
    assert_error(await client.patch(url, headers=admin, json={"prices": None}), 422, "validation_error")
    assert (await client.get(URL, headers=admin)).json()[-1]["interval"] == "month"
    missing = f"{URL}/{uuid.uuid4()}"
    assert_error(await client.patch(missing, headers=admin, json={"name": "x"}), 404, "not_found")
    assert_error(await client.post(f"{missing}/retire", headers=admin), 404, "not_found")

"""Billing end to end: the plans catalogue, Razorpay orders, Stripe and Dodo hosted checkouts, the signed
webhooks of all three (verified on the raw body, recorded once in the inbox, applied once), refunds that
claw credits back, Idempotency-Key replays, and the races that must still grant exactly once.

The providers are the fakes in tests/fakes: FakeStripe and FakeDodo answer on the `outside_http` respx
router (their SDKs speak httpx), FakeRazorpay is a real HTTP server in a thread (its SDK speaks
`requests`). The gateways are built from settings when the container is built, so this module's
`settings` fixture points every gateway at its fake.

Amounts of credits are millicredits (1 credit = 1000) unless a name says otherwise. Every new account
starts with the signup bonus (10 credits).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.models import (
    AuditLog,
    CreditDebt,
    IdempotencyRecord,
    LedgerReason,
    Order,
    Plan,
    Subscription,
    User,
    WebhookEvent,
)
from app.repositories.billing import idempotency_key_digest
from tests.factories import bearer, make_user
from tests.fakes.dodo import FakeDodo, generate_secret
from tests.fakes.razorpay import FakeRazorpay, payment_signature, webhook_signature
from tests.fakes.stripe import FakeStripe, build_customer_details
from tests.support.committed import cleanup, committed_movements, committed_user, leftovers
from tests.support.http import assert_error
from tests.support.payments import (
    BASIC,
    BONUS,
    CHECKOUT,
    CREATE_ORDER,
    DODO_CREDITS_PRODUCT,
    DODO_WEBHOOK,
    ORDERS,
    PLANS,
    PREMIUM,
    PRO,
    RAZORPAY_WEBHOOK,
    STRIPE_WEBHOOK,
    SUBSCRIBE,
    VERIFY_ORDER,
    WEBHOOKS,
    balance,
    dodo_checkout,
    ledger_of,
    order_of,
    order_row,
    payment_flow,
    payment_settings,
    plan_of,
    post_webhook,
    razorpay_order,
    set_dodo_product,
    spend,
    stored_balance,
    stripe_checkout,
    stripe_subscription,
    webhook_rows,
)

# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def billing_overrides() -> dict[str, object]:
    """Per-test setting overrides: `@pytest.mark.parametrize("billing_overrides", [{...}])`."""
    return {}


@pytest.fixture
def settings(
    database_url: str,
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    billing_overrides: dict[str, object],
) -> Settings:
    return payment_settings(database_url, fake_stripe, fake_razorpay, fake_dodo, **billing_overrides)


# --- helpers ---------------------------------------------------------------------------------------


async def orders_of(session: AsyncSession, user_id: uuid.UUID) -> list[Order]:
    session.expunge_all()
    return list(await session.scalars(select(Order).where(Order.user_id == user_id)))


async def count_rows(session: AsyncSession, model: type[Any]) -> int:
    session.expunge_all()
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def reserialized(body: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The same event with one field changed, serialized again: the signature no longer matches."""
    event = json.loads(body)
    change(event)
    return json.dumps(event).encode()


def stripe_session_creates(fake: FakeStripe) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path == "/v1/checkout/sessions"]


# ==================================================================================================
# Plans
# ==================================================================================================


async def test_plans_are_listed_with_a_price_per_currency_and_the_providers_that_take_it(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await set_dodo_product(session, "basic", "pdt_basic")

    response = await client.get(PLANS)

    assert response.status_code == 200, response.text
    plans = {plan["code"]: plan for plan in response.json()}
    assert [plan["code"] for plan in response.json()] == ["basic", "premium", "ultimate", "pro"]
    prices = {
        code: {price["currency"]: (price["amount"], price["providers"]) for price in plan["prices"]}
        for code, plan in plans.items()
    }
    assert prices == {
        # Dodo charges its products' own (USD) prices, so it is offered in USD only.
        "basic": {"INR": (49_900, ["razorpay", "stripe"]), "USD": (599, ["stripe", "dodo"])},
        "premium": {"INR": (89_900, ["razorpay", "stripe"]), "USD": (1_099, ["stripe"])},
        "ultimate": {"INR": (149_900, ["razorpay", "stripe"]), "USD": (1_799, ["stripe"])},
        # Razorpay sells credit packs only: the subscription is Stripe's.
        "pro": {"INR": (79_900, ["stripe"]), "USD": (999, ["stripe"])},
    }
    assert [(plans[c]["kind"], plans[c]["credits"], plans[c]["interval"]) for c in plans] == [
        ("credit_pack", 100, None),
        ("credit_pack", 300, None),
        ("credit_pack", 1000, None),
        ("subscription", 500, "month"),
    ]


NO_RAZORPAY = {"razorpay_key_id": None, "razorpay_key_secret": None, "razorpay_webhook_secret": None}
NO_STRIPE = {"stripe_secret_key": None, "stripe_webhook_secret": None}
NO_DODO = {"dodo_api_key": None, "dodo_webhook_secret": None}


@pytest.mark.parametrize(
    ("billing_overrides", "basic_inr", "basic_usd", "pro_usd"),
    [
        pytest.param(NO_RAZORPAY | NO_DODO, ["stripe"], ["stripe"], ["stripe"], id="stripe-only"),
        pytest.param(NO_STRIPE | NO_DODO, ["razorpay"], [], [], id="razorpay-only"),
        pytest.param(NO_RAZORPAY | NO_STRIPE, [], ["dodo"], [], id="dodo-only"),
        pytest.param(NO_RAZORPAY | NO_STRIPE | NO_DODO, [], [], [], id="none"),
    ],
)
async def test_only_configured_providers_are_offered(
    client: httpx.AsyncClient,
    session: AsyncSession,
    basic_inr: list[str],
    basic_usd: list[str],
    pro_usd: list[str],
) -> None:
    await set_dodo_product(session, "basic", "pdt_basic")

    response = await client.get(PLANS)

    assert response.status_code == 200, response.text
    plans = {plan["code"]: plan for plan in response.json()}
    providers = {
        (code, price["currency"]): price["providers"]
        for code, plan in plans.items()
        for price in plan["prices"]
    }
    assert providers[("basic", "INR")] == basic_inr
    assert providers[("basic", "USD")] == basic_usd
    assert providers[("pro", "USD")] == pro_usd


async def _create_order(client: httpx.AsyncClient, auth: dict[str, str], *_: Any) -> httpx.Response:
    return await client.post(CREATE_ORDER, json={"plan_id": "basic"}, headers=auth)


async def _verify_order(client: httpx.AsyncClient, auth: dict[str, str], *_: Any) -> httpx.Response:
    body = {"razorpay_order_id": "order_x", "razorpay_payment_id": "pay_x", "razorpay_signature": "00"}
    return await client.post(VERIFY_ORDER, json=body, headers=auth)


async def _stripe_checkout(client: httpx.AsyncClient, auth: dict[str, str], *_: Any) -> httpx.Response:
    return await client.post(CHECKOUT, json={"plan_id": "basic", "provider": "stripe"}, headers=auth)


async def _subscribe(client: httpx.AsyncClient, auth: dict[str, str], *_: Any) -> httpx.Response:
    return await client.post(SUBSCRIBE, json={"plan_id": "pro"}, headers=auth)


async def _dodo_checkout(client: httpx.AsyncClient, auth: dict[str, str], *_: Any) -> httpx.Response:
    return await client.post(CHECKOUT, json={"provider": "dodo", "credits": 100}, headers=auth)


async def _razorpay_webhook(
    client: httpx.AsyncClient, _auth: dict[str, str], fakes: dict[str, Any]
) -> httpx.Response:
    fake: FakeRazorpay = fakes["razorpay"]
    event = fake.envelope("payment.captured", {"payment": {"id": "pay_x", "order_id": "order_x"}})
    return await post_webhook(client, RAZORPAY_WEBHOOK, fake.deliver(event))


async def _stripe_webhook(
    client: httpx.AsyncClient, _auth: dict[str, str], fakes: dict[str, Any]
) -> httpx.Response:
    fake: FakeStripe = fakes["stripe"]
    return await post_webhook(client, STRIPE_WEBHOOK, fake.deliver(fake.event("customer.created", {})))


async def _dodo_webhook(
    client: httpx.AsyncClient, _auth: dict[str, str], fakes: dict[str, Any]
) -> httpx.Response:
    fake: FakeDodo = fakes["dodo"]
    return await post_webhook(client, DODO_WEBHOOK, fake.deliver(fake.event("payment.succeeded", {})))


Call = Callable[[httpx.AsyncClient, dict[str, str], dict[str, Any]], Awaitable[httpx.Response]]
PROVIDER_CALLS: dict[str, list[Call]] = {
    "razorpay": [_create_order, _verify_order, _razorpay_webhook],
    "stripe": [_stripe_checkout, _subscribe, _stripe_webhook],
    "dodo": [_dodo_checkout, _dodo_webhook],
}


@pytest.mark.parametrize(
    ("billing_overrides", "missing"),
    [
        pytest.param(NO_RAZORPAY, "razorpay", id="razorpay"),
        pytest.param(NO_STRIPE, "stripe", id="stripe"),
        pytest.param(NO_DODO, "dodo", id="dodo"),
    ],
)
async def test_an_unconfigured_provider_answers_503_while_the_others_work(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    missing: str,
) -> None:
    fakes: dict[str, Any] = {"stripe": fake_stripe, "razorpay": fake_razorpay, "dodo": fake_dodo}
    events_before = await count_rows(session, WebhookEvent)

    for call in PROVIDER_CALLS[missing]:
        response = await call(client, auth, fakes)
        assert_error(response, 503, "provider_not_configured")
    assert await orders_of(session, user.id) == []
    assert await count_rows(session, WebhookEvent) == events_before

    working = {"razorpay": _create_order, "stripe": _stripe_checkout, "dodo": _dodo_checkout}
    webhooks = {"razorpay": _razorpay_webhook, "stripe": _stripe_webhook, "dodo": _dodo_webhook}
    for provider in working.keys() - {missing}:
        response = await working[provider](client, auth, fakes)
        assert response.status_code == 200, (provider, response.text)
        # A verified event about nothing of ours: recorded and ignored.
        response = await webhooks[provider](client, auth, fakes)
        assert response.status_code == 200, (provider, response.text)
        assert response.json() == {"status": "ignored"}
    assert sorted(order.provider for order in await orders_of(session, user.id)) == sorted(
        working.keys() - {missing}
    )
    assert await count_rows(session, WebhookEvent) == events_before + 2


# ==================================================================================================
# Razorpay
# ==================================================================================================


async def test_create_order_creates_a_razorpay_order_through_the_sdk(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    calls_before = len(fake_razorpay.requests)

    created = await razorpay_order(client, auth, "premium")

    calls = fake_razorpay.requests[calls_before:]
    assert [(call["method"], call["path"]) for call in calls] == [("POST", "/v1/orders")]
    order = await order_row(session, created["order_id"])
    sent = calls[0]["body"]
    assert sent == {
        "amount": 89_900,
        "currency": "INR",
        "receipt": order.id.hex,
        "notes": {"order_id": str(order.id), "user_id": str(user.id), "plan_id": str(order.plan_id)},
    }
    assert created["razorpay_order_id"] in fake_razorpay.orders
    assert created == {
        "order_id": str(order.id),
        "key_id": fake_razorpay.key_id,
        "razorpay_order_id": created["razorpay_order_id"],
        "amount": 89_900,
        "currency": "INR",
        "credits": 300.0,
    }
    assert (order.user_id, order.provider, order.status, order.kind) == (
        user.id,
        "razorpay",
        "created",
        "credit_pack",
    )
    assert (order.provider_order_id, order.amount, order.currency, order.credits) == (
        created["razorpay_order_id"],
        89_900,
        "INR",
        PREMIUM,
    )
    assert order.paid_at is None
    assert await ledger_of(session, user.id, LedgerReason.purchase) == []


async def test_create_order_refuses_a_subscription_plan_without_calling_razorpay(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    calls_before = len(fake_razorpay.requests)

    response = await client.post(CREATE_ORDER, json={"plan_id": "pro"}, headers=auth)

    assert_error(response, 400, "plan_not_available")
    assert len(fake_razorpay.requests) == calls_before
    assert await orders_of(session, user.id) == []


async def test_verify_order_with_a_correct_signature_credits_the_plan_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    created = await razorpay_order(client, auth)
    checkout = fake_razorpay.pay(created["razorpay_order_id"])

    first = await client.post(VERIFY_ORDER, json=checkout, headers=auth)
    again = await client.post(VERIFY_ORDER, json=checkout, headers=auth)

    assert first.status_code == 200, first.text
    assert first.json()["success"] is True
    assert first.json()["credits"] == 110.0
    assert first.json()["order"]["status"] == "paid"
    assert again.status_code == 200, again.text
    assert again.json()["credits"] == 110.0
    order = await order_row(session, created["order_id"])
    assert (order.status, order.provider_payment_id) == ("paid", checkout["razorpay_payment_id"])
    assert order.paid_at is not None
    purchases = await ledger_of(session, user.id, LedgerReason.purchase)
    assert [(row.amount, row.idempotency_key) for row in purchases] == [(BASIC, f"order:{order.id}")]
    assert await balance(client, auth) == BONUS + BASIC


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda c, f: {**c, "razorpay_signature": "0" * 64}, id="zeros"),
        pytest.param(
            lambda c, f: {
                **c,
                "razorpay_signature": payment_signature(
                    c["razorpay_order_id"], c["razorpay_payment_id"], "another_secret"
                ),
            },
            id="other-secret",
        ),
        pytest.param(lambda c, f: {**c, "razorpay_payment_id": "pay_" + "X" * 14}, id="other-payment-id"),
        pytest.param(
            lambda c, f: {
                **c,
                "razorpay_signature": payment_signature(
                    c["razorpay_order_id"], c["razorpay_payment_id"], f.webhook_secret
                ),
            },
            id="webhook-secret",
        ),
    ],
)
async def test_verify_order_with_a_wrong_signature_is_400_and_writes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
    forge: Callable[[dict[str, str], FakeRazorpay], dict[str, str]],
) -> None:
    created = await razorpay_order(client, auth)
    checkout = fake_razorpay.pay(created["razorpay_order_id"])

    response = await client.post(VERIFY_ORDER, json=forge(checkout, fake_razorpay), headers=auth)

    assert_error(response, 400, "invalid_signature")
    order = await order_row(session, created["order_id"])
    assert (order.status, order.provider_payment_id, order.paid_at) == ("created", None, None)
    assert await ledger_of(session, user.id, LedgerReason.purchase) == []
    assert await balance(client, auth) == BONUS


async def test_verify_order_with_a_non_ascii_signature_is_400(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    created = await razorpay_order(client, auth)
    checkout = fake_razorpay.pay(created["razorpay_order_id"])

    response = await client.post(
        VERIFY_ORDER, json={**checkout, "razorpay_signature": "é" * 64}, headers=auth
    )

    assert_error(response, 400, "invalid_signature")
    assert await ledger_of(session, user.id, LedgerReason.purchase) == []


async def test_verify_order_of_another_users_order_is_400(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    created = await razorpay_order(client, auth)
    checkout = fake_razorpay.pay(created["razorpay_order_id"])
    intruder = await make_user(session, settings)

    response = await client.post(VERIFY_ORDER, json=checkout, headers=bearer(container, intruder))

    assert response.status_code == 400, response.text
    assert (await order_row(session, created["order_id"])).status == "created"
    assert await ledger_of(session, user.id, LedgerReason.purchase) == []
    assert await ledger_of(session, intruder.id, LedgerReason.purchase) == []


RAZORPAY_STEPS = ("verify", "payment.captured", "order.paid")


@pytest.mark.parametrize("steps", list(itertools.permutations(RAZORPAY_STEPS)), ids="-".join)
async def test_verify_and_both_webhooks_in_any_order_any_number_of_times_credit_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
    steps: tuple[str, ...],
) -> None:
    created = await razorpay_order(client, auth)
    razorpay_order_id = created["razorpay_order_id"]
    checkout = fake_razorpay.pay(razorpay_order_id)
    deliveries = {
        "payment.captured": fake_razorpay.deliver(fake_razorpay.payment_captured_event(razorpay_order_id)),
        "order.paid": fake_razorpay.deliver(fake_razorpay.order_paid_event(razorpay_order_id)),
    }

    event_ids: list[str] = []

    for step in steps:
        if step == "verify":
            for _ in range(2):
                response = await client.post(VERIFY_ORDER, json=checkout, headers=auth)
                assert response.status_code == 200, response.text
                assert response.json()["credits"] == 110.0
        else:
            body, headers = deliveries[step]
            # Razorpay re-sending the same event as a new one (a new x-razorpay-event-id).
            resend = fake_razorpay.deliver(json.loads(body))
            event_ids += [headers["x-razorpay-event-id"], resend[1]["x-razorpay-event-id"]]
            first = await post_webhook(client, RAZORPAY_WEBHOOK, (body, headers))
            redelivery = await post_webhook(client, RAZORPAY_WEBHOOK, (body, headers))
            resent = await post_webhook(client, RAZORPAY_WEBHOOK, resend)
            assert first.json() == {"status": "processed"}, first.text
            assert redelivery.json() == {"status": "duplicate"}, redelivery.text
            assert resent.json() == {"status": "processed"}, resent.text

        order = await order_row(session, created["order_id"])
        assert (order.status, order.provider_payment_id) == ("paid", checkout["razorpay_payment_id"])
        purchases = await ledger_of(session, user.id, LedgerReason.purchase)
        assert [row.amount for row in purchases] == [BASIC], step
        assert await balance(client, auth) == BONUS + BASIC

    rows = [row for row in await webhook_rows(session, "razorpay") if row.event_id in event_ids]
    assert sorted(row.event_type for row in rows) == ["order.paid"] * 2 + ["payment.captured"] * 2
    assert all(row.handled_at is not None for row in rows)
    assert all(row.error is None for row in rows)


async def test_razorpay_payment_failed_marks_the_order_failed_and_a_later_payment_still_credits(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    created = await razorpay_order(client, auth)
    failed = fake_razorpay.payment_failed_event(created["razorpay_order_id"])

    response = await post_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(failed))

    assert response.json() == {"status": "processed"}, response.text
    order = await order_row(session, created["order_id"])
    assert order.status == "failed"
    assert order.failure_reason == failed["payload"]["payment"]["entity"]["error_description"]
    assert await ledger_of(session, user.id, LedgerReason.purchase) == []
    assert await balance(client, auth) == BONUS

    # The customer tries again with another method, and that payment goes through.
    checkout = fake_razorpay.pay(created["razorpay_order_id"])
    verified = await client.post(VERIFY_ORDER, json=checkout, headers=auth)
    assert verified.status_code == 200, verified.text
    assert (await order_row(session, created["order_id"])).status == "paid"
    assert await balance(client, auth) == BONUS + BASIC


async def test_razorpay_payment_failed_after_the_payment_does_not_unpay_the_order(
    client: httpx.AsyncClient,
    session: AsyncSession,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    created = await razorpay_order(client, auth)
    checkout = fake_razorpay.pay(created["razorpay_order_id"])
    assert (await client.post(VERIFY_ORDER, json=checkout, headers=auth)).status_code == 200
    late = fake_razorpay.payment_failed_event(created["razorpay_order_id"], payment_id="pay_" + "F" * 14)

    response = await post_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(late))

    assert response.status_code == 200, response.text
    assert (await order_row(session, created["order_id"])).status == "paid"
    assert await balance(client, auth) == BONUS + BASIC


@pytest.mark.parametrize(
    ("refunded", "status", "clawed_back"),
    [
        pytest.param(None, "refunded", BASIC, id="full"),
        pytest.param(49_900 // 4, "paid", BASIC // 4, id="quarter"),
    ],
)
async def test_razorpay_refund_processed_claws_back_the_credits(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
    refunded: int | None,
    status: str,
    clawed_back: int,
) -> None:
    created = await razorpay_order(client, auth)
    checkout = fake_razorpay.pay(created["razorpay_order_id"])
    assert (await client.post(VERIFY_ORDER, json=checkout, headers=auth)).status_code == 200
    refund = fake_razorpay.refund_processed_event(checkout["razorpay_payment_id"], refunded)
    delivery = fake_razorpay.deliver(refund)

    first = await post_webhook(client, RAZORPAY_WEBHOOK, delivery)
    again = await post_webhook(client, RAZORPAY_WEBHOOK, delivery)

    assert first.json() == {"status": "processed"}, first.text
    assert again.json() == {"status": "duplicate"}, again.text
    order = await order_row(session, created["order_id"])
    assert order.status == status
    assert order.refunded_amount == refund["payload"]["refund"]["entity"]["amount"]
    refunds = await ledger_of(session, user.id, LedgerReason.refund)
    assert [row.amount for row in refunds] == [-clawed_back]
    assert await balance(client, auth) == BONUS + BASIC - clawed_back
    assert await count_rows(session, CreditDebt) == 0
    trail = (
        await session.scalars(
            select(AuditLog.action).where(AuditLog.subject_id == user.id).order_by(AuditLog.created_at)
        )
    ).all()
    assert [a for a in trail if a.startswith("payment.")] == ["payment.credited", "payment.refunded"]


async def test_razorpay_refund_sent_again_under_a_new_event_id_changes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    created = await razorpay_order(client, auth)
    checkout = fake_razorpay.pay(created["razorpay_order_id"])
    assert (await client.post(VERIFY_ORDER, json=checkout, headers=auth)).status_code == 200
    refund = fake_razorpay.refund_processed_event(checkout["razorpay_payment_id"], 49_900 // 4)
    assert (await post_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(refund))).status_code == 200

    # The same refund (same refund id) as another event, e.g. re-sent from the dashboard.
    resent = await post_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(refund))

    assert resent.status_code == 200, resent.text
    assert [row.amount for row in await ledger_of(session, user.id, LedgerReason.refund)] == [-BASIC // 4]
    order = await order_row(session, created["order_id"])
    assert (order.status, order.refunded_amount) == ("paid", 49_900 // 4)


# ==================================================================================================
# Stripe
# ==================================================================================================


@pytest.mark.parametrize(
    ("billing_overrides", "tax"),
    [
        pytest.param({}, False, id="no-tax"),
        pytest.param({"stripe_automatic_tax": True, "stripe_tax_id_collection": True}, True, id="tax"),
    ],
)
async def test_create_checkout_opens_a_stripe_payment_session(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    tax: bool,
) -> None:
    created = await stripe_checkout(client, auth, "premium")

    [call] = stripe_session_creates(fake_stripe)
    order = await order_row(session, created["order_id"])
    stripe_session = fake_stripe.sessions[created["session_id"]]
    assert created == {
        "order_id": str(order.id),
        "provider": "stripe",
        "checkout_url": stripe_session["url"],
        "session_id": stripe_session["id"],
    }
    params = call.params
    assert params["mode"] == "payment"
    assert params["client_reference_id"] == str(order.id)
    assert params["metadata"] == {
        "order_id": str(order.id),
        "user_id": str(user.id),
        "plan_id": str(order.plan_id),
    }
    price_data = {"currency": "usd", "unit_amount": "1099", "product_data": {"name": "Premium"}}
    if tax:  # Stripe adds the tax on top of our price
        price_data["tax_behavior"] = "exclusive"
    assert params["line_items"] == [{"price_data": price_data, "quantity": "1"}]
    assert params["customer_email"] == user.email
    assert params["success_url"].endswith("?session_id={CHECKOUT_SESSION_ID}")
    if tax:
        assert params["automatic_tax"] == {"enabled": "true"}
        assert params["tax_id_collection"] == {"enabled": "true"}
    else:
        assert "automatic_tax" not in params
        assert "tax_id_collection" not in params
    assert call.headers["authorization"] == f"Bearer {fake_stripe.secret_key}"
    assert (order.provider, order.status, order.kind, order.amount, order.currency, order.credits) == (
        "stripe",
        "created",
        "credit_pack",
        1_099,
        "USD",
        PREMIUM,
    )
    assert (order.provider_order_id, order.checkout_url) == (stripe_session["id"], stripe_session["url"])


async def test_subscribe_opens_a_stripe_subscription_session(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    response = await client.post(SUBSCRIBE, json={"plan_id": "pro"}, headers=auth)

    assert response.status_code == 200, response.text
    [call] = stripe_session_creates(fake_stripe)
    order = await order_row(session, response.json()["order_id"])
    assert call.params["mode"] == "subscription"
    assert call.params["line_items"][0]["price_data"]["recurring"] == {"interval": "month"}
    assert call.params["line_items"][0]["price_data"]["unit_amount"] == "999"
    assert call.params["subscription_data"]["metadata"]["user_id"] == str(user.id)
    assert call.params["metadata"]["order_id"] == str(order.id)
    assert call.params["client_reference_id"] == str(order.id)
    assert response.json()["checkout_url"] == fake_stripe.sessions[order.provider_order_id or ""]["url"]
    assert (order.kind, order.credits, order.amount, order.currency) == ("subscription", PRO, 999, "USD")


async def test_subscribe_refuses_a_credit_pack(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    response = await client.post(SUBSCRIBE, json={"plan_id": "basic"}, headers=auth)

    assert_error(response, 400, "plan_not_available")
    assert stripe_session_creates(fake_stripe) == []
    assert await orders_of(session, user.id) == []


@pytest.mark.parametrize("billing_overrides", [{"stripe_automatic_tax": True}])
async def test_checkout_completed_and_paid_credits_once_and_stores_the_tax_facts(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    created = await stripe_checkout(client, auth)
    details = build_customer_details(country="DE", tax_ids=[("eu_vat", "DE123456789")], business_name="ACME")
    event = fake_stripe.checkout_completed(created["session_id"], customer_details=details, amount_tax=114)
    delivery = fake_stripe.deliver(event)

    first = await post_webhook(client, STRIPE_WEBHOOK, delivery)
    duplicate = await post_webhook(client, STRIPE_WEBHOOK, delivery)
    # The same session completed again as another event: the order is paid already.
    resent = await post_webhook(
        client, STRIPE_WEBHOOK, fake_stripe.deliver(fake_stripe.event(event["type"], event["data"]["object"]))
    )

    assert first.json() == {"status": "processed"}, first.text
    assert duplicate.json() == {"status": "duplicate"}, duplicate.text
    assert resent.json() == {"status": "processed"}, resent.text
    order = await order_row(session, created["order_id"])
    assert (order.status, order.provider_payment_id) == ("paid", event["data"]["object"]["payment_intent"])
    assert order.billing_country == "DE"
    assert order.customer_tax_ids == [{"type": "eu_vat", "value": "DE123456789"}]
    assert order.tax_amount == 114
    assert [row.amount for row in await ledger_of(session, user.id, LedgerReason.purchase)] == [BASIC]
    assert await balance(client, auth) == BONUS + BASIC
    [row] = await webhook_rows(session, "stripe", event["id"])
    assert (row.event_type, row.error) == ("checkout.session.completed", None)
    assert row.handled_at is not None


async def test_an_unpaid_checkout_credits_nothing_until_the_async_payment_succeeds(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    created = await stripe_checkout(client, auth)
    details = build_customer_details(country="FR", tax_ids=[("eu_vat", "FR12345678901")])
    completed = fake_stripe.checkout_completed(
        created["session_id"], payment_status="unpaid", customer_details=details
    )

    response = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(completed))

    assert response.status_code == 200, response.text
    order = await order_row(session, created["order_id"])
    assert (order.status, order.paid_at) == ("created", None)
    assert (order.billing_country, order.customer_tax_ids) == (
        "FR",
        [{"type": "eu_vat", "value": "FR12345678901"}],
    )
    assert await ledger_of(session, user.id, LedgerReason.purchase) == []
    assert await balance(client, auth) == BONUS

    succeeded = fake_stripe.async_payment_succeeded(created["session_id"])
    for _ in range(2):
        response = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(succeeded))
        assert response.status_code == 200, response.text

    assert (await order_row(session, created["order_id"])).status == "paid"
    assert [row.amount for row in await ledger_of(session, user.id, LedgerReason.purchase)] == [BASIC]
    assert await balance(client, auth) == BONUS + BASIC


async def test_an_unpaid_checkout_whose_async_payment_fails_is_marked_failed(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    created = await stripe_checkout(client, auth)
    completed = fake_stripe.checkout_completed(created["session_id"], payment_status="unpaid")
    assert (await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(completed))).status_code == 200

    failed = fake_stripe.async_payment_failed(created["session_id"])
    response = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(failed))

    assert response.json() == {"status": "processed"}, response.text
    order = await order_row(session, created["order_id"])
    assert (order.status, order.failure_reason) == ("failed", "checkout.session.async_payment_failed")
    assert await ledger_of(session, user.id, LedgerReason.purchase) == []
    assert await balance(client, auth) == BONUS


async def test_invoice_paid_grants_the_monthly_credits_and_pro_once_per_invoice_until_deleted(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    created, subscription_id = await stripe_subscription(client, auth, fake_stripe)
    # Paying the subscription's checkout pays the order; the credits come with each invoice.
    order = await order_row(session, created["order_id"])
    assert (order.status, order.provider_subscription_id) == ("paid", subscription_id)
    assert await balance(client, auth) == BONUS
    assert await plan_of(client, auth) == "free"

    first_invoice = fake_stripe.invoice_paid(subscription_id, billing_reason="subscription_create")
    assert "subscription" not in first_invoice["data"]["object"]  # only under parent, as on Stripe
    delivery = fake_stripe.deliver(first_invoice)
    assert (await post_webhook(client, STRIPE_WEBHOOK, delivery)).json() == {"status": "processed"}
    assert (await post_webhook(client, STRIPE_WEBHOOK, delivery)).json() == {"status": "duplicate"}
    same_invoice_again = fake_stripe.event("invoice.paid", first_invoice["data"]["object"])
    resent = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(same_invoice_again))
    assert resent.json() == {"status": "processed"}

    assert await balance(client, auth) == BONUS + PRO
    assert await plan_of(client, auth) == "pro"
    grants = await ledger_of(session, user.id, LedgerReason.subscription)
    assert [(row.amount, row.reference) for row in grants] == [(PRO, subscription_id)]
    session.expunge_all()
    [subscription] = list(await session.scalars(select(Subscription).where(Subscription.user_id == user.id)))
    assert (subscription.provider, subscription.provider_subscription_id, subscription.status) == (
        "stripe",
        subscription_id,
        "active",
    )
    period_end = first_invoice["data"]["object"]["lines"]["data"][0]["period"]["end"]
    assert subscription.current_period_end == datetime.fromtimestamp(period_end, tz=UTC)

    next_month = fake_stripe.invoice_paid(subscription_id)
    assert (await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(next_month))).status_code == 200
    assert await balance(client, auth) == BONUS + 2 * PRO
    assert len(await ledger_of(session, user.id, LedgerReason.subscription)) == 2

    deleted = fake_stripe.subscription_deleted(subscription_id)
    response = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(deleted))

    assert response.json() == {"status": "processed"}, response.text
    assert await plan_of(client, auth) == "free"
    session.expunge_all()
    subscription = await session.get_one(Subscription, subscription.id)
    assert subscription.status == "canceled"
    assert subscription.ended_at is not None
    # Credits already granted stay: the period was paid for.
    assert await balance(client, auth) == BONUS + 2 * PRO


async def test_charge_refunded_after_the_credits_were_spent_records_the_shortfall_as_a_debt(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    created = await stripe_checkout(client, auth)
    completed = fake_stripe.checkout_completed(created["session_id"])
    assert (await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(completed))).status_code == 200
    assert await balance(client, auth) == BONUS + BASIC
    await spend(session, user.id, 105_000)  # 5 credits left
    payment_intent = completed["data"]["object"]["payment_intent"]
    refunded = fake_stripe.charge_refunded(payment_intent, 599, 599)
    delivery = fake_stripe.deliver(refunded)

    response = await post_webhook(client, STRIPE_WEBHOOK, delivery)
    again = await post_webhook(client, STRIPE_WEBHOOK, delivery)

    assert response.json() == {"status": "processed"}, response.text
    assert again.json() == {"status": "duplicate"}, again.text
    assert await balance(client, auth) == 0
    assert await stored_balance(session, user.id) == 0
    [refund] = await ledger_of(session, user.id, LedgerReason.refund)
    assert refund.amount == -5_000
    session.expunge_all()
    [debt] = list(await session.scalars(select(CreditDebt).where(CreditDebt.user_id == user.id)))
    assert (debt.amount, debt.reason, debt.order_id, debt.settled_at) == (
        BASIC - 5_000,
        "refund",
        uuid.UUID(created["order_id"]),
        None,
    )
    order = await order_row(session, created["order_id"])
    assert (order.status, order.refunded_amount) == ("refunded", 599)


async def test_a_refund_in_two_parts_claws_back_the_whole_pack(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    created = await stripe_checkout(client, auth)
    completed = fake_stripe.checkout_completed(created["session_id"])
    assert (await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(completed))).status_code == 200
    payment_intent = completed["data"]["object"]["payment_intent"]

    part = fake_stripe.charge_refunded(payment_intent, 599, 300)
    rest = fake_stripe.charge_refunded(payment_intent, 599, 599, previously_refunded=300)
    for event in (part, rest):
        response = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(event))
        assert response.json() == {"status": "processed"}, response.text

    order = await order_row(session, created["order_id"])
    assert (order.status, order.refunded_amount) == ("refunded", 599)
    refunds = await ledger_of(session, user.id, LedgerReason.refund)
    assert len(refunds) == 2
    assert -sum(row.amount for row in refunds) == BASIC
    assert await balance(client, auth) == BONUS


async def test_a_late_invoice_paid_after_the_subscription_ended_does_not_bring_back_pro(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    _, subscription_id = await stripe_subscription(client, auth, fake_stripe)
    last_invoice = fake_stripe.invoice_paid(subscription_id, billing_reason="subscription_create")
    deleted = fake_stripe.subscription_deleted(subscription_id)

    # Stripe does not guarantee order: the deletion arrives, then the (retried) invoice of the last period.
    first = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(deleted))
    late = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(last_invoice))

    assert first.status_code == 200, first.text
    assert late.status_code == 200, late.text
    assert await balance(client, auth) == BONUS + PRO  # the period was paid for
    assert await plan_of(client, auth) == "free"


async def test_a_renewal_of_a_plan_taken_off_sale_is_still_credited(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    _, subscription_id = await stripe_subscription(client, auth, fake_stripe)
    await session.execute(update(Plan).where(Plan.code == "pro").values(is_active=False))
    await session.flush()
    renewal = fake_stripe.invoice_paid(subscription_id)

    response = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(renewal))

    assert response.status_code == 200, response.text
    assert await webhook_rows(session, "stripe", renewal["id"]) != []
    assert await balance(client, auth) == BONUS + PRO
    assert await plan_of(client, auth) == "pro"


async def test_a_stripe_signature_just_inside_the_tolerance_is_accepted(
    client: httpx.AsyncClient, session: AsyncSession, auth: dict[str, str], fake_stripe: FakeStripe
) -> None:
    created = await stripe_checkout(client, auth)
    event = fake_stripe.checkout_completed(created["session_id"])

    response = await post_webhook(
        client, STRIPE_WEBHOOK, fake_stripe.deliver(event, timestamp=int(time.time()) - 270)
    )

    assert response.json() == {"status": "processed"}, response.text
    assert await balance(client, auth) == BONUS + BASIC


async def test_an_unhandled_stripe_event_is_stored_and_ignored(
    client: httpx.AsyncClient, session: AsyncSession, fake_stripe: FakeStripe
) -> None:
    event = fake_stripe.event("customer.created", {"id": "cus_1", "object": "customer"})

    response = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(event))

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ignored"}
    [row] = await webhook_rows(session, "stripe", event["id"])
    assert row.event_type == "customer.created"
    assert row.handled_at is not None
    assert row.error is None
    assert row.payload["data"]["object"] == {"id": "cus_1", "object": "customer"}


async def test_a_duplicate_stripe_delivery_is_answered_200_and_changes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    created = await stripe_checkout(client, auth)
    delivery = fake_stripe.deliver(fake_stripe.checkout_completed(created["session_id"]))
    assert (await post_webhook(client, STRIPE_WEBHOOK, delivery)).json() == {"status": "processed"}
    order_before = await order_row(session, created["order_id"])
    ledger_before = [(row.id, row.amount) for row in await ledger_of(session, user.id)]
    [event_before] = await webhook_rows(session, "stripe")

    response = await post_webhook(client, STRIPE_WEBHOOK, delivery)

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "duplicate"}
    assert [(row.id, row.amount) for row in await ledger_of(session, user.id)] == ledger_before
    order_after = await order_row(session, created["order_id"])
    assert (order_after.status, order_after.paid_at, order_after.updated_at) == (
        order_before.status,
        order_before.paid_at,
        order_before.updated_at,
    )
    [event_after] = await webhook_rows(session, "stripe")
    assert (event_after.id, event_after.handled_at) == (event_before.id, event_before.handled_at)


async def test_a_stripe_event_that_fails_to_apply_is_500_kept_with_its_error_and_applied_on_redelivery(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = await stripe_checkout(client, auth)
    event = fake_stripe.checkout_completed(created["session_id"])
    delivery = fake_stripe.deliver(event)

    async def broken(*_args: Any, **_kwargs: Any) -> bool:
        raise RuntimeError("ledger unavailable")

    monkeypatch.setattr("app.services.billing.orders.fulfil", broken)
    response = await post_webhook(client, STRIPE_WEBHOOK, delivery)

    assert_error(response, 500, "webhook_processing_failed")
    [row] = await webhook_rows(session, "stripe", event["id"])
    assert row.handled_at is None
    assert row.error is not None
    assert "RuntimeError: ledger unavailable" in row.error
    order = await order_row(session, created["order_id"])
    # The effect was rolled back with its savepoint, tax facts included.
    assert (order.status, order.billing_country) == ("created", None)
    assert await ledger_of(session, user.id, LedgerReason.purchase) == []

    monkeypatch.undo()
    redelivered = await post_webhook(client, STRIPE_WEBHOOK, delivery)
    again = await post_webhook(client, STRIPE_WEBHOOK, delivery)

    assert redelivered.json() == {"status": "processed"}, redelivered.text
    assert again.json() == {"status": "duplicate"}, again.text
    [row] = await webhook_rows(session, "stripe", event["id"])
    assert row.handled_at is not None
    assert row.error is None
    assert (await order_row(session, created["order_id"])).status == "paid"
    assert [row.amount for row in await ledger_of(session, user.id, LedgerReason.purchase)] == [BASIC]
    assert await balance(client, auth) == BONUS + BASIC


# ==================================================================================================
# Dodo
# ==================================================================================================


async def test_dodo_checkout_for_a_plan_mapped_to_a_dodo_product(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    await set_dodo_product(session, "premium", "pdt_premium")

    response = await client.post(CHECKOUT, json={"plan_id": "premium", "provider": "dodo"}, headers=auth)

    assert response.status_code == 200, response.text
    created = response.json()
    order = await order_row(session, created["order_id"])
    assert created == {
        "order_id": str(order.id),
        "provider": "dodo",
        "checkout_url": f"https://checkout.dodopayments.com/session/{created['session_id']}",
        "session_id": created["session_id"],
    }
    sent = fake_dodo.checkouts[created["session_id"]]
    assert sent["product_cart"] == [{"product_id": "pdt_premium", "quantity": 1}]
    assert sent["metadata"] == {
        "order_id": str(order.id),
        "user_id": str(user.id),
        "plan_id": str(order.plan_id),
    }
    assert sent["customer"] == {"email": user.email}
    assert (order.provider, order.status, order.amount, order.currency, order.credits) == (
        "dodo",
        "created",
        1_099,
        "USD",
        PREMIUM,
    )
    assert order.provider_order_id == created["session_id"]


async def test_dodo_checkout_for_a_plan_without_a_dodo_product_is_refused(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    response = await client.post(CHECKOUT, json={"plan_id": "premium", "provider": "dodo"}, headers=auth)

    assert_error(response, 400, "plan_not_available")
    assert fake_dodo.requests == []
    assert await orders_of(session, user.id) == []


@pytest.mark.parametrize(
    "billing_overrides",
    [{"dodo_price_per_credit_cents": 4, "dodo_min_custom_credits": 50, "dodo_max_custom_credits": 500}],
)
async def test_dodo_checkout_for_a_custom_number_of_credits(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    for wanted in (50, 500):
        response = await client.post(CHECKOUT, json={"provider": "dodo", "credits": wanted}, headers=auth)

        assert response.status_code == 200, response.text
        order = await order_row(session, response.json()["order_id"])
        sent = fake_dodo.checkouts[response.json()["session_id"]]
        assert sent["product_cart"] == [
            {"product_id": DODO_CREDITS_PRODUCT, "quantity": 1, "amount": wanted * 4}
        ]
        assert sent["metadata"]["order_id"] == str(order.id)
        assert (order.provider, order.kind, order.credits, order.amount, order.plan_id) == (
            "dodo",
            "credit_pack",
            wanted * 1000,
            wanted * 4,
            None,
        )


@pytest.mark.parametrize(
    ("billing_overrides", "body"),
    [
        pytest.param(
            {"dodo_min_custom_credits": 50, "dodo_max_custom_credits": 500}, {"credits": 49}, id="below"
        ),
        pytest.param(
            {"dodo_min_custom_credits": 50, "dodo_max_custom_credits": 500}, {"credits": 501}, id="above"
        ),
        pytest.param({}, {}, id="neither-plan-nor-credits"),
        pytest.param({"dodo_credits_product_id": None}, {"credits": 100}, id="no-credits-product"),
    ],
)
async def test_dodo_custom_credits_outside_the_bounds_are_refused(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
    body: dict[str, Any],
) -> None:
    response = await client.post(CHECKOUT, json={"provider": "dodo", **body}, headers=auth)

    assert_error(response, 400, "plan_not_available")
    assert fake_dodo.requests == []
    assert await orders_of(session, user.id) == []


@pytest.mark.parametrize(
    "credits", [10**400, 10**9 + 1, 0, -1], ids=["10e400", "over-a-billion", "zero", "negative"]
)
async def test_a_custom_number_of_credits_out_of_any_range_is_422_and_asks_nothing_of_dodo(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
    credits: int,
) -> None:
    body = f'{{"provider": "dodo", "credits": {credits}}}'

    response = await client.post(CHECKOUT, content=body, headers={**auth, "Content-Type": "application/json"})

    assert_error(response, 422, "validation_error")
    assert fake_dodo.requests == []
    assert await orders_of(session, user.id) == []


async def test_dodo_payment_succeeded_credits_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    created = await dodo_checkout(client, auth, 100)
    event = fake_dodo.payment_succeeded(created["session_id"], total_amount=500, currency="USD")
    delivery = fake_dodo.deliver(event)

    resend = fake_dodo.deliver(event)  # the same event under a new webhook-id

    first = await post_webhook(client, DODO_WEBHOOK, delivery)
    duplicate = await post_webhook(client, DODO_WEBHOOK, delivery)
    resent = await post_webhook(client, DODO_WEBHOOK, resend)

    assert first.json() == {"status": "processed"}, first.text
    assert duplicate.json() == {"status": "duplicate"}, duplicate.text
    assert resent.json() == {"status": "processed"}, resent.text
    order = await order_row(session, created["order_id"])
    assert (order.status, order.provider_payment_id) == ("paid", event["data"]["payment_id"])
    assert [row.amount for row in await ledger_of(session, user.id, LedgerReason.purchase)] == [100_000]
    assert await balance(client, auth) == BONUS + 100_000
    rows = await webhook_rows(session, "dodo")
    assert {row.event_id for row in rows} == {delivery[1]["webhook-id"], resend[1]["webhook-id"]}
    assert all(row.handled_at is not None for row in rows)


async def test_dodo_payment_failed_marks_the_order_failed(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    created = await dodo_checkout(client, auth)
    event = fake_dodo.payment_failed(created["session_id"], total_amount=500, currency="USD")

    response = await post_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(event))

    assert response.json() == {"status": "processed"}, response.text
    order = await order_row(session, created["order_id"])
    assert (order.status, order.failure_reason) == ("failed", "The card was declined by the issuing bank")
    assert await ledger_of(session, user.id, LedgerReason.purchase) == []
    assert await balance(client, auth) == BONUS


async def test_dodo_refund_succeeded_claws_back_the_credits(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    created = await dodo_checkout(client, auth, 200)
    paid = fake_dodo.payment_succeeded(created["session_id"], total_amount=1_000, currency="USD")
    assert (await post_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(paid))).status_code == 200
    assert await balance(client, auth) == BONUS + 200_000

    refund = fake_dodo.refund_succeeded(paid["data"]["payment_id"], 1_000, "USD")
    delivery = fake_dodo.deliver(refund)
    first = await post_webhook(client, DODO_WEBHOOK, delivery)
    again = await post_webhook(client, DODO_WEBHOOK, delivery)

    assert first.json() == {"status": "processed"}, first.text
    assert again.json() == {"status": "duplicate"}, again.text
    order = await order_row(session, created["order_id"])
    assert (order.status, order.refunded_amount) == ("refunded", 1_000)
    assert [row.amount for row in await ledger_of(session, user.id, LedgerReason.refund)] == [-200_000]
    assert await balance(client, auth) == BONUS


# ==================================================================================================
# Webhook signatures (every provider)
# ==================================================================================================

PROVIDERS = ("stripe", "razorpay", "dodo")
SIGNATURE_HEADER = {
    "stripe": "Stripe-Signature",
    "razorpay": "X-Razorpay-Signature",
    "dodo": "webhook-signature",
}
Spoiled = tuple[bytes, dict[str, Any]]
Spoil = Callable[[Any, bytes, dict[str, str]], Spoiled]


def _tampered(_fake: Any, body: bytes, headers: dict[str, str]) -> Spoiled:
    return reserialized(body, lambda event: event.update(livemode=True)), headers


def _without(header: str) -> Spoil:
    def spoil(_fake: Any, body: bytes, headers: dict[str, str]) -> Spoiled:
        return body, {key: value for key, value in headers.items() if key != header}

    return spoil


def _non_ascii(header: str) -> Spoil:
    def spoil(_fake: Any, body: bytes, headers: dict[str, str]) -> Spoiled:
        # A header carries bytes: Starlette reads them as latin-1, so 0xE9 arrives as "é".
        return body, {**headers, header: b"\xe9" * 64}

    return spoil


def _stripe_wrong_secret(fake: FakeStripe, body: bytes, _headers: dict[str, str]) -> Spoiled:
    return fake.deliver(json.loads(body), secret="whsec_not_the_secret")


def _stripe_stale(fake: FakeStripe, body: bytes, _headers: dict[str, str]) -> Spoiled:
    return fake.deliver(json.loads(body), timestamp=int(time.time()) - 330)


def _stripe_garbled(_fake: FakeStripe, body: bytes, headers: dict[str, str]) -> Spoiled:
    return body, {**headers, "Stripe-Signature": "v1=,t=soon"}


def _stripe_not_json(fake: FakeStripe, _body: bytes, _headers: dict[str, str]) -> Spoiled:
    garbage = b"checkout.session.completed"
    return garbage, {"Content-Type": "application/json", "Stripe-Signature": fake.sign(garbage)}


def _razorpay_signed_with(secret: str | None) -> Spoil:
    def spoil(fake: FakeRazorpay, body: bytes, headers: dict[str, str]) -> Spoiled:
        event_id = headers["x-razorpay-event-id"]
        return fake.deliver(json.loads(body), event_id=event_id, secret=secret or fake.key_secret)

    return spoil


def _razorpay_not_json(fake: FakeRazorpay, _body: bytes, headers: dict[str, str]) -> Spoiled:
    garbage = b"payment.captured: yes"
    return garbage, {**headers, "X-Razorpay-Signature": webhook_signature(garbage, fake.webhook_secret)}


def _dodo_signed(timestamp: timedelta = timedelta(0), *, other_secret: bool = False) -> Spoil:
    def spoil(fake: FakeDodo, body: bytes, headers: dict[str, str]) -> Spoiled:
        secret = generate_secret() if other_secret else None
        moment = datetime.now(UTC) + timestamp
        return fake.deliver(json.loads(body), msg_id=headers["webhook-id"], timestamp=moment, secret=secret)

    return spoil


def _dodo_not_json(fake: FakeDodo, _body: bytes, headers: dict[str, str]) -> Spoiled:
    garbage = b"payment.succeeded"
    stamp = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
    signature = fake.sign(garbage, msg_id=headers["webhook-id"], timestamp=stamp)
    return garbage, {**headers, "webhook-signature": signature}


SPOILS = [
    *(
        pytest.param(provider, spoil, id=f"{provider}-{name}")
        for provider in PROVIDERS
        for name, spoil in (
            ("tampered-body", _tampered),
            ("missing-signature", _without(SIGNATURE_HEADER[provider])),
            ("non-ascii-signature", _non_ascii(SIGNATURE_HEADER[provider])),
        )
    ),
    pytest.param("stripe", _stripe_wrong_secret, id="stripe-wrong-secret"),
    pytest.param("stripe", _stripe_stale, id="stripe-stale-timestamp"),
    pytest.param("stripe", _stripe_garbled, id="stripe-garbled-header"),
    pytest.param("stripe", _stripe_not_json, id="stripe-not-json"),
    pytest.param("razorpay", _razorpay_signed_with("not_the_secret"), id="razorpay-wrong-secret"),
    # The API key secret is not the webhook secret.
    pytest.param("razorpay", _razorpay_signed_with(None), id="razorpay-api-key-secret"),
    pytest.param("razorpay", _razorpay_not_json, id="razorpay-not-json"),
    pytest.param("dodo", _dodo_signed(other_secret=True), id="dodo-wrong-secret"),
    pytest.param("dodo", _dodo_signed(-timedelta(minutes=6)), id="dodo-6-minutes-old"),
    pytest.param("dodo", _dodo_signed(timedelta(minutes=6)), id="dodo-6-minutes-ahead"),
    pytest.param("dodo", _without("webhook-timestamp"), id="dodo-missing-timestamp"),
    pytest.param("dodo", _without("webhook-id"), id="dodo-missing-id"),
    pytest.param("dodo", _dodo_not_json, id="dodo-not-json"),
]


@pytest.mark.parametrize(("provider", "spoil"), SPOILS)
async def test_a_webhook_whose_signature_does_not_hold_is_400_and_changes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    provider: str,
    spoil: Spoil,
) -> None:
    fakes: dict[str, Any] = {"stripe": fake_stripe, "razorpay": fake_razorpay, "dodo": fake_dodo}
    flow = payment_flow(provider, fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    body, headers = flow.paid_delivery(purchase)
    events_before = await count_rows(session, WebhookEvent)
    spoiled_body, spoiled_headers = spoil(fakes[provider], body, headers)

    response = await client.post(WEBHOOKS[provider], content=spoiled_body, headers=spoiled_headers)

    assert_error(response, 400, "invalid_signature")
    assert await count_rows(session, WebhookEvent) == events_before
    order = await order_of(client, auth, purchase.order_id)
    assert (order["status"], order["billing_country"]) == ("created", None)
    assert await balance(client, auth) == BONUS
    # The genuine delivery still works afterwards.
    assert (await post_webhook(client, WEBHOOKS[provider], (body, headers))).json() == {"status": "processed"}
    assert await balance(client, auth) == BONUS + purchase.credits


# ==================================================================================================
# Idempotency-Key
# ==================================================================================================


def _provider_calls(name: str, fakes: dict[str, Any]) -> int:
    if name == "razorpay":
        return sum(1 for r in fakes["razorpay"].requests if r["method"] == "POST")
    if name == "stripe":
        return len(stripe_session_creates(fakes["stripe"]))
    return sum(1 for r in fakes["dodo"].requests if r.method == "POST")


IDEMPOTENT_POSTS = [
    pytest.param(CREATE_ORDER, {"plan_id": "basic"}, {"plan_id": "premium"}, "razorpay", id="create-order"),
    pytest.param(
        CHECKOUT,
        {"plan_id": "basic", "provider": "stripe"},
        {"plan_id": "basic", "provider": "stripe", "currency": "INR"},
        "stripe",
        id="create-checkout-stripe",
    ),
    pytest.param(
        CHECKOUT,
        {"provider": "dodo", "credits": 100},
        {"provider": "dodo", "credits": 101},
        "dodo",
        id="create-checkout-dodo",
    ),
    pytest.param(
        SUBSCRIBE, {"plan_id": "pro"}, {"plan_id": "pro", "currency": "INR"}, "stripe", id="subscribe"
    ),
]


@pytest.mark.parametrize(("path", "body", "other_body", "provider"), IDEMPOTENT_POSTS)
async def test_the_same_idempotency_key_and_body_replays_the_first_response(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    path: str,
    body: dict[str, Any],
    other_body: dict[str, Any],
    provider: str,
) -> None:
    fakes: dict[str, Any] = {"stripe": fake_stripe, "razorpay": fake_razorpay, "dodo": fake_dodo}
    calls_before = _provider_calls(provider, fakes)
    headers = {**auth, "Idempotency-Key": f"key-{uuid.uuid4().hex}"}

    first = await client.post(path, json=body, headers=headers)
    # Same body with its keys in another order: still the same request.
    replayed = await client.post(path, json=dict(reversed(list(body.items()))), headers=headers)

    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    assert replayed.status_code == 200, replayed.text
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == first.json()
    assert _provider_calls(provider, fakes) == calls_before + 1
    [order] = await orders_of(session, user.id)
    assert str(order.id) == first.json()["order_id"]

    reused = await client.post(path, json=other_body, headers=headers)

    assert_error(reused, 409, "idempotency_key_reused")
    assert _provider_calls(provider, fakes) == calls_before + 1
    assert len(await orders_of(session, user.id)) == 1
    session.expunge_all()
    [record] = list(
        await session.scalars(select(IdempotencyRecord).where(IdempotencyRecord.user_id == user.id))
    )
    assert (record.key, record.status_code) == (idempotency_key_digest(headers["Idempotency-Key"]), 200)

    # Without the key, or with another one, the request is new.
    fresh = await client.post(path, json=body, headers={**auth, "Idempotency-Key": f"key-{uuid.uuid4().hex}"})
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["order_id"] != first.json()["order_id"]
    assert len(await orders_of(session, user.id)) == 2


@pytest.mark.parametrize(
    ("provider", "failure", "status", "error"),
    [
        pytest.param("razorpay", 500, 503, "service_unavailable", id="razorpay-500"),
        pytest.param("razorpay", 400, 502, "payment_provider_error", id="razorpay-400"),
        pytest.param("stripe", 500, 503, "service_unavailable", id="stripe-500"),
        pytest.param("stripe", 400, 502, "payment_provider_error", id="stripe-400"),
        pytest.param("dodo", 500, 503, "service_unavailable", id="dodo-500"),
        pytest.param("dodo", 422, 502, "payment_provider_error", id="dodo-422"),
    ],
)
async def test_a_provider_failure_leaves_no_order_and_a_retry_with_the_same_key_goes_through(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    provider: str,
    failure: int,
    status: int,
    error: str,
) -> None:
    fakes: dict[str, Any] = {"stripe": fake_stripe, "razorpay": fake_razorpay, "dodo": fake_dodo}
    fakes[provider].fail_next(failure)
    path, body = {
        "razorpay": (CREATE_ORDER, {"plan_id": "basic"}),
        "stripe": (CHECKOUT, {"plan_id": "basic", "provider": "stripe"}),
        "dodo": (CHECKOUT, {"provider": "dodo", "credits": 100}),
    }[provider]
    headers = {**auth, "Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    calls_before = _provider_calls(provider, fakes)

    failed = await client.post(path, json=body, headers=headers)

    assert_error(failed, status, error)
    assert _provider_calls(provider, fakes) == calls_before + 1  # no retries: payment_api_max_retries=0
    assert await orders_of(session, user.id) == []
    assert await count_rows(session, IdempotencyRecord) == 0

    retried = await client.post(path, json=body, headers=headers)

    assert retried.status_code == 200, retried.text
    assert "idempotent-replayed" not in retried.headers
    [order] = await orders_of(session, user.id)
    assert str(order.id) == retried.json()["order_id"]


@pytest.mark.parametrize("billing_overrides", [{"payment_api_max_retries": 1}])
@pytest.mark.parametrize(
    ("provider", "body"),
    [
        pytest.param("stripe", {"plan_id": "basic", "provider": "stripe"}, id="stripe"),
        pytest.param("dodo", {"provider": "dodo", "credits": 100}, id="dodo"),
    ],
)
async def test_a_checkout_whose_answer_was_lost_is_retried_under_one_key_and_opens_one_session(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_dodo: FakeDodo,
    provider: str,
    body: dict[str, Any],
) -> None:
    fake: FakeStripe | FakeDodo = fake_stripe if provider == "stripe" else fake_dodo
    fake.timeout_next(created=True)  # the provider opened the session, its answer never came back

    response = await client.post(CHECKOUT, json=body, headers={**auth, "Idempotency-Key": "lost-answer"})

    assert response.status_code == 200, response.text
    assert list(fake.sessions) == [response.json()["session_id"]]
    posts = [request for request in fake.requests if request.method == "POST"]
    keys = {request.headers["idempotency-key"] for request in posts}
    assert (len(posts), len(keys)) == (2, 1)  # the SDK's retry sent the same key
    [order] = await orders_of(session, user.id)
    assert order.provider_order_id == response.json()["session_id"]


async def test_idempotency_keys_belong_to_their_user(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    user: User,
    auth: dict[str, str],
) -> None:
    other = await make_user(session, settings)
    key = {"Idempotency-Key": "shared-key"}

    mine = await client.post(CHECKOUT, json={"plan_id": "basic"}, headers={**auth, **key})
    theirs = await client.post(
        CHECKOUT, json={"plan_id": "basic"}, headers={**bearer(container, other), **key}
    )

    assert mine.status_code == theirs.status_code == 200
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["order_id"] != theirs.json()["order_id"]
    assert len(await orders_of(session, other.id)) == 1


# ==================================================================================================
# Orders
# ==================================================================================================


async def test_orders_lists_only_the_callers_orders_newest_first(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    other = await make_user(session, settings)
    other_auth = bearer(container, other)
    mine = [
        (await stripe_checkout(client, auth, "basic"))["order_id"],
        (await razorpay_order(client, auth, "premium"))["order_id"],
    ]
    theirs = (await stripe_checkout(client, other_auth, "ultimate"))["order_id"]
    mine.append((await stripe_checkout(client, auth, "ultimate"))["order_id"])
    completed = fake_stripe.checkout_completed((await order_row(session, mine[0])).provider_order_id or "")
    assert (await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(completed))).status_code == 200

    response = await client.get(ORDERS, headers=auth)

    assert response.status_code == 200, response.text
    listed = response.json()
    assert [order["id"] for order in listed] == list(reversed(mine))
    assert [(o["provider"], o["status"], o["amount"], o["currency"], o["credits"]) for o in listed] == [
        ("stripe", "created", 1_799, "USD", 1000.0),
        ("razorpay", "created", 89_900, "INR", 300.0),
        ("stripe", "paid", 599, "USD", 100.0),
    ]
    other_listed = (await client.get(ORDERS, headers=other_auth)).json()
    assert [order["id"] for order in other_listed] == [theirs]
    assert (await client.get(ORDERS)).status_code == 401


# ==================================================================================================
# Races (PostgreSQL: real commits, one connection per request)
# ==================================================================================================


async def test_razorpay_verify_and_both_webhooks_at_once_grant_once(
    committing: tuple[FastAPI, Database],
    engine: AsyncEngine,
    settings: Settings,
    fake_razorpay: FakeRazorpay,
) -> None:
    app, database = committing
    user = await committed_user(database, settings)
    events: list[tuple[str, str]] = []
    try:
        container: Container = app.state.container
        auth = bearer(container, user)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            created = await razorpay_order(client, auth)
            checkout = fake_razorpay.pay(created["razorpay_order_id"])
            deliveries = [
                fake_razorpay.deliver(fake_razorpay.payment_captured_event(created["razorpay_order_id"])),
                fake_razorpay.deliver(fake_razorpay.order_paid_event(created["razorpay_order_id"])),
            ]
            events.extend(("razorpay", headers["x-razorpay-event-id"]) for _, headers in deliveries)

            responses = await asyncio.gather(
                client.post(VERIFY_ORDER, json=checkout, headers=auth),
                *(
                    client.post(RAZORPAY_WEBHOOK, content=body, headers=headers)
                    for body, headers in deliveries
                ),
            )

        assert [response.status_code for response in responses] == [200] * 3, [r.text for r in responses]
        assert await committed_movements(engine, user.id) == (BONUS + BASIC, [BASIC])
        async with engine.connect() as connection:
            status = await connection.scalar(
                select(Order.status).where(Order.id == uuid.UUID(created["order_id"]))
            )
        assert status == "paid"
    finally:
        await cleanup(engine, [user.id], events)
    assert await leftovers(engine, user.id, events) == 0

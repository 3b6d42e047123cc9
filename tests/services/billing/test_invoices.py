"""Refunds and disputes of the charge that paid a Stripe subscription invoice (app/services/billing/
invoices.py), end to end through signed webhooks, with the fake Stripe answering the Invoice Payments API
over the SDK's real HTTP contract.

In API 2026-10-28 a Charge (and a Dispute) names no invoice, and `invoice.paid` names no payment intent,
so the webhook asks Stripe which invoice the refunded payment intent paid
(`GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=pi_...`) and takes back the
refunded share of the credits that invoice granted (ledger key `stripe_invoice:<id>`): cumulatively, once
per refund state, never below zero (the rest is a `credit_debts` row). A failing lookup answers 500 so
Stripe delivers again; a payment intent that paid no invoice of ours is stored and ignored.

Amounts of credits are millicredits; every new account starts with the signup bonus (10 credits); Pro
grants 500 credits a month for 9.99 USD (999 cents).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.integrations.payments import stripe as stripe_gateway
from app.integrations.payments.base import PaymentGatewayError
from app.integrations.payments.stripe import StripeGateway
from app.models import LedgerReason, User
from tests.factories import bearer
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.committed import cleanup, committed_movements, committed_user, leftovers
from tests.support.payments import (
    BONUS,
    PRO,
    PRO_USD,
    STRIPE_WEBHOOK,
    SUBSCRIBE,
    balance,
    debts_of,
    ledger_of,
    payment_settings,
    post_webhook,
    resent,
    send_stripe,
    spend,
    stored_balance,
    stripe_subscription,
    webhook_rows,
)


@pytest.fixture
def settings(
    database_url: str, fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo
) -> Settings:
    return payment_settings(database_url, fake_stripe, fake_razorpay, fake_dodo)


# --- helpers ---------------------------------------------------------------------------------------


async def renewal(client: httpx.AsyncClient, auth: dict[str, str], fake: FakeStripe) -> tuple[str, str]:
    """Subscribe to Pro and have one invoice paid (its credits granted): (invoice id, its payment intent)."""
    _, subscription_id = await stripe_subscription(client, auth, fake)
    paid = fake.invoice_paid(subscription_id)
    await send_stripe(client, fake, paid)
    invoice_id = str(paid["data"]["object"]["id"])
    assert await balance(client, auth) == BONUS + PRO
    return invoice_id, fake.payment_intent_of(invoice_id)


def lookups(fake: FakeStripe) -> list[dict[str, Any]]:
    return [r.params for r in fake.requests if r.method == "GET" and r.path == "/v1/invoice_payments"]


def share(refunded: int) -> int:
    return PRO * refunded // PRO_USD


# ==================================================================================================
# Refunds
# ==================================================================================================


async def test_a_full_refund_of_a_renewal_takes_its_credits_back_once_however_often_it_is_delivered(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    invoice_id, payment_intent = await renewal(client, auth, fake_stripe)
    refunded = fake_stripe.charge_refunded(payment_intent, PRO_USD, PRO_USD)
    delivery = fake_stripe.deliver(refunded)
    # What Stripe sends: a Charge that names no invoice.
    parsed = stripe.Webhook.construct_event(
        delivery[0], delivery[1]["Stripe-Signature"], fake_stripe.webhook_secret
    )
    assert isinstance(parsed.data.object, stripe.Charge)
    assert "invoice" not in parsed.data.object.to_dict()

    first = await post_webhook(client, STRIPE_WEBHOOK, delivery)
    again = await post_webhook(client, STRIPE_WEBHOOK, delivery)
    await send_stripe(client, fake_stripe, resent(fake_stripe, refunded))  # same refund, another event id

    assert first.json() == {"status": "processed"}, first.text
    assert again.json() == {"status": "duplicate"}, again.text
    assert await balance(client, auth) == BONUS
    charge_id = refunded["data"]["object"]["id"]
    [refund] = await ledger_of(session, user.id, LedgerReason.refund)
    assert (refund.amount, refund.requested_amount, refund.idempotency_key, refund.reference) == (
        -PRO,
        PRO,
        f"stripe_refund:{charge_id}:{PRO_USD}:{invoice_id}",
        f"stripe_invoice:{invoice_id}",
    )
    assert await debts_of(session, user.id) == []
    # The contract the gateway spoke: the Invoice Payments list, filtered by the payment intent.
    assert (
        lookups(fake_stripe)
        == [{"payment": {"type": "payment_intent", "payment_intent": payment_intent}, "limit": "100"}] * 2
    )  # the first delivery and the re-sent one; the duplicate never got that far


async def test_partial_refunds_of_a_renewal_add_up_to_the_grant_and_never_more(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    invoice_id, payment_intent = await renewal(client, auth, fake_stripe)
    third = fake_stripe.charge_refunded(payment_intent, PRO_USD, 333)
    two_thirds = fake_stripe.charge_refunded(payment_intent, PRO_USD, 666, previously_refunded=333)
    everything = fake_stripe.charge_refunded(payment_intent, PRO_USD, PRO_USD, previously_refunded=666)

    await send_stripe(client, fake_stripe, third)
    assert await balance(client, auth) == BONUS + PRO - share(333)
    await send_stripe(client, fake_stripe, two_thirds)
    assert await balance(client, auth) == BONUS + PRO - share(666)
    # An older refund state arriving late (a new event id: Stripe does not keep order) takes nothing more.
    await send_stripe(client, fake_stripe, resent(fake_stripe, third))
    assert await balance(client, auth) == BONUS + PRO - share(666)
    await send_stripe(client, fake_stripe, everything)
    await send_stripe(client, fake_stripe, resent(fake_stripe, everything))
    await send_stripe(client, fake_stripe, resent(fake_stripe, two_thirds))

    refunds = await ledger_of(session, user.id, LedgerReason.refund)
    assert [row.amount for row in refunds] == [
        -share(333),
        -(share(666) - share(333)),
        -(PRO - share(666)),
    ]
    assert -sum(row.amount for row in refunds) == PRO  # rounding never leaves a crumb nor takes one more
    assert {row.reference for row in refunds} == {f"stripe_invoice:{invoice_id}"}
    assert await balance(client, auth) == BONUS


async def test_a_refund_of_spent_renewal_credits_leaves_a_debt_and_the_balance_never_goes_negative(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    invoice_id, payment_intent = await renewal(client, auth, fake_stripe)
    await spend(session, user.id, BONUS + PRO - 5_000)  # 5 credits left
    half = fake_stripe.charge_refunded(payment_intent, PRO_USD, 500)
    rest = fake_stripe.charge_refunded(payment_intent, PRO_USD, PRO_USD, previously_refunded=500)

    for event in (half, resent(fake_stripe, half), rest, resent(fake_stripe, rest)):
        await send_stripe(client, fake_stripe, event)

    assert await balance(client, auth) == 0
    assert await stored_balance(session, user.id) == 0
    refunds = await ledger_of(session, user.id, LedgerReason.refund)  # also checks balance == sum(ledger)
    assert [(row.amount, row.requested_amount) for row in refunds] == [
        (-5_000, share(500)),
        (0, PRO - share(500)),
    ]
    debts = await debts_of(session, user.id)
    charge_id = half["data"]["object"]["id"]
    assert [(d.amount, d.reason, d.order_id, d.reference, d.settled_at) for d in debts] == [
        (share(500) - 5_000, "refund", None, f"stripe_refund:{charge_id}:500:{invoice_id}", None),
        (PRO - share(500), "refund", None, f"stripe_refund:{charge_id}:{PRO_USD}:{invoice_id}", None),
    ]
    assert 5_000 + sum(d.amount for d in debts) == PRO  # taken + owed == the grant, exactly


@pytest.mark.parametrize(
    "failure",
    [500, 429, None],
    ids=["stripe-500", "rate-limited", "timeout"],
)
async def test_a_failing_lookup_answers_500_and_the_redelivery_applies_the_refund(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    failure: int | None,
) -> None:
    _, payment_intent = await renewal(client, auth, fake_stripe)
    refunded = fake_stripe.charge_refunded(payment_intent, PRO_USD, PRO_USD)
    delivery = fake_stripe.deliver(refunded)
    fake_stripe.fail_invoice_payments_next(failure)

    failed = await post_webhook(client, STRIPE_WEBHOOK, delivery)

    assert failed.status_code == 500, failed.text
    assert failed.json()["error"] == "webhook_processing_failed"
    assert await balance(client, auth) == BONUS + PRO  # nothing taken, nothing half-done
    [row] = await webhook_rows(session, "stripe", refunded["id"])
    assert row.handled_at is None
    assert row.error is not None
    assert "PaymentGatewayError" in row.error

    retried = await post_webhook(client, STRIPE_WEBHOOK, delivery)  # Stripe's retry: same event, same body

    assert retried.status_code == 200, retried.text
    assert retried.json() == {"status": "processed"}
    assert await balance(client, auth) == BONUS
    assert [row.amount for row in await ledger_of(session, user.id, LedgerReason.refund)] == [-PRO]
    [row] = await webhook_rows(session, "stripe", refunded["id"])
    assert row.handled_at is not None
    assert len(lookups(fake_stripe)) == 2


async def test_a_refund_of_a_payment_intent_that_paid_no_invoice_of_ours_is_stored_and_ignored(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    await renewal(client, auth, fake_stripe)
    # A payment intent Stripe knows no invoice for (another integration's payment) ...
    unknown = fake_stripe.charge_refunded("pi_" + uuid.uuid4().hex, 1_500, 1_500)
    # ... and one that paid an invoice we never granted credits for (not one of our subscriptions).
    foreign_invoice = fake_stripe.add_invoice_payment("in_" + uuid.uuid4().hex, 2_000)
    foreign = fake_stripe.charge_refunded(foreign_invoice["payment"]["payment_intent"], 2_000, 2_000)

    for event in (unknown, foreign):
        await send_stripe(client, fake_stripe, event, "ignored")
        [row] = await webhook_rows(session, "stripe", event["id"])
        assert (row.event_type, row.handled_at is not None, row.error) == ("charge.refunded", True, None)

    assert await balance(client, auth) == BONUS + PRO
    assert await ledger_of(session, user.id, LedgerReason.refund) == []
    assert len(lookups(fake_stripe)) == 2


async def test_a_refund_of_a_credit_pack_order_does_not_ask_stripe_for_invoices(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    response = await client.post(
        "/api/v1/payment/create-checkout",
        json={"plan_id": "basic", "provider": "stripe", "currency": "USD"},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    completed = fake_stripe.checkout_completed(response.json()["session_id"])
    await send_stripe(client, fake_stripe, completed)
    payment_intent = completed["data"]["object"]["payment_intent"]

    await send_stripe(client, fake_stripe, fake_stripe.charge_refunded(payment_intent, 599, 599))

    assert await balance(client, auth) == BONUS
    assert lookups(fake_stripe) == []


# ==================================================================================================
# Disputes
# ==================================================================================================


async def test_a_dispute_of_a_renewal_takes_its_credits_once_and_winning_gives_them_back_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    invoice_id, payment_intent = await renewal(client, auth, fake_stripe)
    dispute = fake_stripe.dispute(payment_intent, PRO_USD)
    inquiry = fake_stripe.dispute(payment_intent, PRO_USD, status="warning_needs_response")
    await send_stripe(client, fake_stripe, fake_stripe.dispute_event("charge.dispute.created", inquiry["id"]))
    assert await balance(client, auth) == BONUS + PRO  # a question moves no money

    created = fake_stripe.dispute_event("charge.dispute.created", dispute["id"])
    for event in (
        created,
        resent(fake_stripe, created),
        fake_stripe.dispute_event("charge.dispute.funds_withdrawn", dispute["id"]),
        fake_stripe.dispute_event("charge.dispute.updated", dispute["id"], status="under_review"),
    ):
        await send_stripe(client, fake_stripe, event)

    assert await balance(client, auth) == BONUS
    key = f"chargeback:stripe:{dispute['id']}:{invoice_id}"
    [taken] = await ledger_of(session, user.id, LedgerReason.chargeback)
    assert (taken.amount, taken.idempotency_key, taken.reference) == (
        -PRO,
        key,
        f"stripe_invoice:{invoice_id}",
    )
    # A refund of money already charged back takes nothing more.
    await send_stripe(client, fake_stripe, fake_stripe.charge_refunded(payment_intent, PRO_USD, 500))
    assert await balance(client, auth) == BONUS

    won = fake_stripe.dispute_event("charge.dispute.closed", dispute["id"], status="won")
    for event in (won, resent(fake_stripe, won), resent(fake_stripe, created)):
        await send_stripe(client, fake_stripe, event)

    assert await balance(client, auth) == BONUS + PRO
    given = await ledger_of(session, user.id, LedgerReason.subscription)
    assert [(row.amount, row.idempotency_key) for row in given] == [
        (PRO, f"stripe_invoice:{invoice_id}"),
        (PRO, f"chargeback_won:stripe:{dispute['id']}:{invoice_id}"),
    ]
    # The invoice is whole again: a later refund claws back as usual.
    refund = fake_stripe.charge_refunded(payment_intent, PRO_USD, PRO_USD, previously_refunded=500)
    await send_stripe(client, fake_stripe, refund)
    assert await balance(client, auth) == BONUS


async def test_a_dispute_after_a_partial_refund_takes_only_what_is_left_and_spent_credits_become_a_debt(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    invoice_id, payment_intent = await renewal(client, auth, fake_stripe)
    await send_stripe(client, fake_stripe, fake_stripe.charge_refunded(payment_intent, PRO_USD, 500))
    await spend(session, user.id, BONUS + PRO - share(500) - 1_000)  # 1 credit left
    dispute = fake_stripe.dispute(payment_intent, PRO_USD)

    await send_stripe(client, fake_stripe, fake_stripe.dispute_event("charge.dispute.created", dispute["id"]))

    assert await balance(client, auth) == 0
    key = f"chargeback:stripe:{dispute['id']}:{invoice_id}"
    [taken] = await ledger_of(session, user.id, LedgerReason.chargeback)
    assert (taken.amount, taken.requested_amount) == (-1_000, PRO - share(500))
    [debt] = await debts_of(session, user.id)
    assert (debt.amount, debt.reason, debt.reference, debt.order_id) == (
        PRO - share(500) - 1_000,
        "chargeback",
        key,
        None,
    )

    won = fake_stripe.dispute_event("charge.dispute.closed", dispute["id"], status="won")
    await send_stripe(client, fake_stripe, won)
    await send_stripe(client, fake_stripe, resent(fake_stripe, won))

    assert await balance(client, auth) == 1_000  # what it took comes back, once
    debts = {d.reference: d for d in await debts_of(session, user.id)}
    assert (debts[key].reason, debts[key].settled_at is not None) == ("chargeback_won", True)


# ==================================================================================================
# The gateway and the fake's Invoice Payments API
# ==================================================================================================


@pytest.fixture
async def gateway(fake_stripe: FakeStripe) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(
        secret_key=fake_stripe.secret_key,
        webhook_secret=None,
        api_base=fake_stripe.api_base,
        automatic_tax=False,
        tax_id_collection=False,
        max_retries=0,
    )
    yield gateway
    await gateway.aclose()


async def test_the_gateway_reads_every_page_of_a_payment_intents_invoice_payments(
    gateway: StripeGateway, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe_gateway, "INVOICE_PAYMENTS_PAGE_SIZE", 2)
    first = fake_stripe.add_invoice_payment("in_first", 500, payment_intent="pi_shared")
    fake_stripe.add_invoice_payment("in_elsewhere", 700)  # another payment intent
    second = fake_stripe.add_invoice_payment("in_second", 300, payment_intent="pi_shared")
    third = fake_stripe.add_invoice_payment("in_third", 200, "eur", payment_intent="pi_shared", status="open")

    found = await gateway.invoices_paid_by("pi_shared")

    assert [(p.invoice_id, p.status, p.amount_paid, p.amount_requested, p.currency) for p in found] == [
        (third["invoice"], "open", None, 200, "eur"),
        (second["invoice"], "paid", 300, 300, "usd"),
        (first["invoice"], "paid", 500, 500, "usd"),
    ]
    pages = lookups(fake_stripe)
    assert [page.get("starting_after") for page in pages] == [None, second["id"]]
    assert await gateway.invoices_paid_by("pi_nothing") == []


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (429, True), (None, True), (400, False), (401, False)]
)
async def test_the_gateway_maps_lookup_failures_as_it_does_for_checkouts(
    gateway: StripeGateway, fake_stripe: FakeStripe, status: int | None, retryable: bool
) -> None:
    fake_stripe.fail_invoice_payments_next(status)
    with pytest.raises(PaymentGatewayError) as raised:
        await gateway.invoices_paid_by("pi_any")
    assert raised.value.retryable is retryable


async def test_the_fake_invoice_payments_api_keeps_stripes_parameter_rules(fake_stripe: FakeStripe) -> None:
    client = stripe.StripeClient(
        fake_stripe.secret_key,
        base_addresses={"api": fake_stripe.api_base},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(),
    )
    paid = fake_stripe.add_invoice_payment("in_1", 999, payment_intent="pi_1")
    listed = await client.v1.invoice_payments.list_async(
        params={"payment": {"type": "payment_intent", "payment_intent": "pi_1"}, "status": "paid"}
    )
    [item] = listed.data
    assert isinstance(item, stripe.InvoicePayment)
    assert (item.id, item.invoice, item.payment.payment_intent, item.amount_paid) == (
        paid["id"],
        "in_1",
        "pi_1",
        999,
    )
    assert (await client.v1.invoice_payments.retrieve_async(paid["id"])).invoice == "in_1"
    with pytest.raises(stripe.InvalidRequestError) as missing_type:
        await client.v1.invoice_payments.list_async(params={"payment": {"payment_intent": "pi_1"}})  # type: ignore[typeddict-item]
    assert (missing_type.value.code, missing_type.value.param) == ("parameter_missing", "payment[type]")
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        await client.v1.invoice_payments.list_async(params={"charge": "ch_1"})  # type: ignore[typeddict-unknown-key]
    assert unknown.value.code == "parameter_unknown"


# ==================================================================================================
# Race (PostgreSQL: real commits, one connection per request)
# ==================================================================================================


async def test_partial_refunds_of_one_renewal_arriving_at_once_take_exactly_the_grant(
    committing: tuple[FastAPI, Database],
    engine: AsyncEngine,
    settings: Settings,
    fake_stripe: FakeStripe,
) -> None:
    app, database = committing
    user = await committed_user(database, settings)
    events: list[tuple[str, str]] = []
    try:
        container: Container = app.state.container
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            subscribed = await client.post(
                SUBSCRIBE, json={"plan_id": "pro"}, headers=bearer(container, user)
            )
            assert subscribed.status_code == 200, subscribed.text
            completed = fake_stripe.checkout_completed(subscribed.json()["session_id"])
            events.append(("stripe", completed["id"]))
            await send_stripe(client, fake_stripe, completed)
            paid = fake_stripe.invoice_paid(completed["data"]["object"]["subscription"])
            events.append(("stripe", paid["id"]))
            await send_stripe(client, fake_stripe, paid)
            payment_intent = fake_stripe.payment_intent_of(paid["data"]["object"]["id"])
            burst = [
                fake_stripe.charge_refunded(payment_intent, PRO_USD, refunded)
                for refunded in (250, 500, 750, PRO_USD)
            ]
            burst += [resent(fake_stripe, event) for event in burst]
            events += [("stripe", event["id"]) for event in burst]
            deliveries = [fake_stripe.deliver(event) for event in burst]

            responses = await asyncio.gather(
                *(client.post(STRIPE_WEBHOOK, content=body, headers=headers) for body, headers in deliveries)
            )

        assert [response.status_code for response in responses] == [200] * 8, [r.text for r in responses]
        account_balance, refunds = await committed_movements(engine, user.id, LedgerReason.refund)
        assert (account_balance, -sum(refunds)) == (BONUS, PRO)
    finally:
        await cleanup(engine, [user.id], events)
    assert await leftovers(engine, user.id, events) == 0

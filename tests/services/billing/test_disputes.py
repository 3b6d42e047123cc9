"""Card disputes (chargebacks) of all three providers (app/services/billing/disputes.py), end to end through
the signed webhooks.

The rules under test: the credits a disputed payment bought are taken back (ledger reason `chargeback`) as
soon as a real chargeback is open, once per dispute however many events say so and in whatever order;
never below a zero balance (what was spent becomes a `credit_debts` row); a won dispute gives back exactly
what was taken, once, as a `purchase` grant, and cancels the debt. Inquiries take nothing. Events about
payments that are neither our orders nor subscription invoices we granted credits for are stored and
answered "ignored" (disputes of renewals: test_invoices.py beside this module).

Helpers: tests/support/payments.py. Amounts of credits are millicredits; every new account starts with the
signup bonus (10 credits).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import stripe
from dodopayments.types import (
    DisputeCancelledWebhookEvent,
    DisputeLostWebhookEvent,
    DisputeOpenedWebhookEvent,
    DisputeWonWebhookEvent,
)
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.models import LedgerReason, Order, User
from tests.factories import bearer
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.committed import cleanup, committed_movements, committed_user, leftovers
from tests.support.payments import (
    BASIC,
    BASIC_INR,
    BASIC_USD,
    BONUS,
    DODO_WEBHOOK,
    PRO,
    PRO_USD,
    RAZORPAY_WEBHOOK,
    STRIPE_WEBHOOK,
    VERIFY_ORDER,
    amounts,
    balance,
    debts_of,
    dodo_checkout,
    ledger_entry,
    ledger_of,
    order_row,
    payment_settings,
    post_webhook,
    razorpay_order,
    resent,
    send_stripe,
    send_webhook,
    spend,
    stored_balance,
    stripe_checkout,
    stripe_subscription,
    webhook_rows,
)


@pytest.fixture
def settings(
    database_url: str, fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo
) -> Settings:
    return payment_settings(database_url, fake_stripe, fake_razorpay, fake_dodo)


# --- helpers ---------------------------------------------------------------------------------------


async def stripe_pack(client: httpx.AsyncClient, auth: dict[str, str], fake: FakeStripe) -> tuple[str, str]:
    """Buy the basic pack through Stripe: (our order id, the Stripe payment intent)."""
    created = await stripe_checkout(client, auth)
    completed = fake.checkout_completed(created["session_id"])
    answer = await post_webhook(client, STRIPE_WEBHOOK, fake.deliver(completed))
    assert answer.json() == {"status": "processed"}, answer.text
    return created["order_id"], str(completed["data"]["object"]["payment_intent"])


# ==================================================================================================
# Stripe
# ==================================================================================================


async def test_a_stripe_dispute_takes_the_credits_back_once_however_often_and_however_it_is_told(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    order_id, payment_intent = await stripe_pack(client, auth, fake_stripe)
    dispute = fake_stripe.dispute(payment_intent, BASIC_USD)
    created = fake_stripe.dispute_event("charge.dispute.created", dispute["id"])
    delivery = fake_stripe.deliver(created)
    # The object is a real Stripe Dispute to the SDK.
    parsed = stripe.Webhook.construct_event(
        delivery[0], delivery[1]["Stripe-Signature"], fake_stripe.webhook_secret
    )
    assert isinstance(parsed.data.object, stripe.Dispute)

    await send_webhook(client, STRIPE_WEBHOOK, delivery, "processed")
    await send_webhook(client, STRIPE_WEBHOOK, delivery, "duplicate")
    # The same dispute told again: re-sent under a new event id, funds withdrawn, updated, lost.
    await send_stripe(client, fake_stripe, resent(fake_stripe, created))
    withdrawn = fake_stripe.dispute_event("charge.dispute.funds_withdrawn", dispute["id"])
    await send_stripe(client, fake_stripe, withdrawn)
    updated = fake_stripe.dispute_event("charge.dispute.updated", dispute["id"], status="under_review")
    await send_stripe(client, fake_stripe, updated)
    lost = fake_stripe.dispute_event("charge.dispute.closed", dispute["id"], status="lost")
    await send_stripe(client, fake_stripe, lost)

    [taken] = await ledger_of(session, user.id, LedgerReason.chargeback)
    assert (taken.amount, taken.idempotency_key, taken.reference) == (
        -BASIC,
        f"chargeback:stripe:{dispute['id']}",
        f"order:{order_id}",
    )
    assert await balance(client, auth) == BONUS
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount) == ("refunded", BASIC_USD)
    assert order.failure_reason == f"Charged back: stripe dispute {dispute['id']}"
    assert await debts_of(session, user.id) == []
    assert len(await webhook_rows(session, "stripe")) == 6  # checkout + five dispute events, all stored


async def test_a_won_stripe_dispute_gives_the_credits_back_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    order_id, payment_intent = await stripe_pack(client, auth, fake_stripe)
    dispute = fake_stripe.dispute(payment_intent, BASIC_USD)
    created = fake_stripe.dispute_event("charge.dispute.created", dispute["id"])
    for event in (created, fake_stripe.dispute_event("charge.dispute.funds_withdrawn", dispute["id"])):
        await send_stripe(client, fake_stripe, event)
    assert await balance(client, auth) == BONUS

    won = fake_stripe.dispute_event("charge.dispute.closed", dispute["id"], status="won")
    delivery = fake_stripe.deliver(won)
    await send_webhook(client, STRIPE_WEBHOOK, delivery, "processed")
    await send_webhook(client, STRIPE_WEBHOOK, delivery, "duplicate")
    await send_stripe(client, fake_stripe, resent(fake_stripe, won))
    reinstated = fake_stripe.dispute_event("charge.dispute.funds_reinstated", dispute["id"])
    await send_stripe(client, fake_stripe, reinstated)
    # A late copy of the opening (Stripe retries for days) finds the dispute settled.
    await send_stripe(client, fake_stripe, resent(fake_stripe, created))

    assert await balance(client, auth) == BONUS + BASIC
    assert amounts(await ledger_of(session, user.id, LedgerReason.chargeback)) == [-BASIC]
    purchases = await ledger_of(session, user.id, LedgerReason.purchase)
    assert [(row.amount, row.idempotency_key) for row in purchases] == [
        (BASIC, f"order:{order_id}"),
        (BASIC, f"chargeback_won:stripe:{dispute['id']}"),
    ]
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount, order.failure_reason) == ("paid", 0, None)
    # The order is whole again: a later refund claws back as usual.
    refund = fake_stripe.charge_refunded(payment_intent, BASIC_USD, BASIC_USD)
    await send_stripe(client, fake_stripe, refund)
    assert await balance(client, auth) == BONUS
    assert (await order_row(session, order_id)).status == "refunded"


async def test_a_stripe_dispute_of_spent_credits_leaves_a_debt_and_winning_cancels_it(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    order_id, payment_intent = await stripe_pack(client, auth, fake_stripe)
    await spend(session, user.id, BONUS + BASIC - 5_000)  # 5 credits left
    dispute = fake_stripe.dispute(payment_intent, BASIC_USD)

    await send_stripe(client, fake_stripe, fake_stripe.dispute_event("charge.dispute.created", dispute["id"]))

    assert await balance(client, auth) == 0
    assert await stored_balance(session, user.id) == 0
    [taken] = await ledger_of(session, user.id, LedgerReason.chargeback)
    assert (taken.amount, taken.requested_amount) == (-5_000, BASIC)
    [debt] = await debts_of(session, user.id)
    assert (debt.amount, debt.reason, debt.order_id, debt.reference, debt.settled_at) == (
        BASIC - 5_000,
        "chargeback",
        uuid.UUID(order_id),
        f"chargeback:stripe:{dispute['id']}",
        None,
    )

    won = fake_stripe.dispute_event("charge.dispute.closed", dispute["id"], status="won")
    await send_stripe(client, fake_stripe, won)
    await send_stripe(client, fake_stripe, resent(fake_stripe, won))

    # Exactly what was taken comes back; what could not be taken is no longer owed.
    assert await balance(client, auth) == 5_000
    [debt] = await debts_of(session, user.id)
    assert (debt.amount, debt.reason) == (BASIC - 5_000, "chargeback_won")
    assert debt.settled_at is not None
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount) == ("paid", 0)


async def test_a_won_dispute_of_credits_all_spent_is_undone_once_although_nothing_comes_back(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    order_id, payment_intent = await stripe_pack(client, auth, fake_stripe)
    await spend(session, user.id, BONUS + BASIC)
    dispute = fake_stripe.dispute(payment_intent, BASIC_USD)
    await send_stripe(client, fake_stripe, fake_stripe.dispute_event("charge.dispute.created", dispute["id"]))
    assert amounts(await ledger_of(session, user.id, LedgerReason.chargeback)) == [0]
    assert [debt.amount for debt in await debts_of(session, user.id)] == [BASIC]
    assert (await order_row(session, order_id)).refunded_amount == BASIC_USD

    won = fake_stripe.dispute_event("charge.dispute.closed", dispute["id"], status="won")
    for _ in range(3):  # the decision told three times, under three event ids
        await send_stripe(client, fake_stripe, resent(fake_stripe, won))

    assert await balance(client, auth) == 0
    assert await ledger_entry(session, f"chargeback_won:stripe:{dispute['id']}") is None  # nothing to grant
    [debt] = await debts_of(session, user.id)
    assert (debt.reason, debt.settled_at is not None) == ("chargeback_won", True)
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount) == ("paid", 0)  # given back once, not three times


@pytest.mark.parametrize(
    ("decision", "final_balance"),
    [
        pytest.param("won", BONUS + BASIC, id="won"),
        pytest.param("lost", BONUS, id="lost"),
    ],
)
async def test_a_stripe_decision_that_overtakes_the_opening_settles_the_dispute_for_good(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    decision: str,
    final_balance: int,
) -> None:
    order_id, payment_intent = await stripe_pack(client, auth, fake_stripe)
    dispute = fake_stripe.dispute(payment_intent, BASIC_USD)
    created = fake_stripe.dispute_event("charge.dispute.created", dispute["id"])
    withdrawn = fake_stripe.dispute_event("charge.dispute.funds_withdrawn", dispute["id"])
    closed = fake_stripe.dispute_event("charge.dispute.closed", dispute["id"], status=decision)

    for event in (closed, created, withdrawn):  # Stripe does not guarantee order
        await send_stripe(client, fake_stripe, event)

    assert await balance(client, auth) == final_balance
    assert amounts(await ledger_of(session, user.id, LedgerReason.chargeback)) == [-BASIC]
    expected_status = "paid" if decision == "won" else "refunded"
    assert (await order_row(session, order_id)).status == expected_status


async def test_a_stripe_inquiry_takes_nothing_until_it_becomes_a_chargeback(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    order_id, payment_intent = await stripe_pack(client, auth, fake_stripe)
    inquiry = fake_stripe.dispute(payment_intent, BASIC_USD, status="warning_needs_response")
    await send_stripe(client, fake_stripe, fake_stripe.dispute_event("charge.dispute.created", inquiry["id"]))
    await send_stripe(
        client,
        fake_stripe,
        fake_stripe.dispute_event("charge.dispute.updated", inquiry["id"], status="warning_under_review"),
    )
    assert await balance(client, auth) == BONUS + BASIC
    assert await ledger_of(session, user.id, LedgerReason.chargeback) == []
    assert (await order_row(session, order_id)).status == "paid"

    # The bank escalates it: the money is withdrawn, the credits go.
    escalated = fake_stripe.dispute_event(
        "charge.dispute.funds_withdrawn", inquiry["id"], status="needs_response"
    )
    await send_stripe(client, fake_stripe, escalated)
    assert await balance(client, auth) == BONUS

    # An inquiry closed without a chargeback takes nothing.
    other_id, other_intent = await stripe_pack(client, auth, fake_stripe)
    closed = fake_stripe.dispute(other_intent, BASIC_USD, status="warning_closed")
    await send_stripe(client, fake_stripe, fake_stripe.dispute_event("charge.dispute.closed", closed["id"]))
    assert await balance(client, auth) == BONUS + BASIC
    assert (await order_row(session, other_id)).status == "paid"


async def test_a_partial_dispute_takes_its_share_and_never_more_than_the_pack_with_refunds(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    order_id, payment_intent = await stripe_pack(client, auth, fake_stripe)
    refund = fake_stripe.charge_refunded(payment_intent, BASIC_USD, 300)
    await send_stripe(client, fake_stripe, refund)
    refunded_share = BASIC * 300 // BASIC_USD
    assert await balance(client, auth) == BONUS + BASIC - refunded_share

    # The rest of the payment is disputed: together they take exactly the pack.
    dispute = fake_stripe.dispute(payment_intent, BASIC_USD - 300)
    await send_stripe(client, fake_stripe, fake_stripe.dispute_event("charge.dispute.created", dispute["id"]))

    assert amounts(await ledger_of(session, user.id, LedgerReason.chargeback)) == [-(BASIC - refunded_share)]
    assert await balance(client, auth) == BONUS
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount) == ("refunded", BASIC_USD)

    # A second dispute of money already returned finds nothing left to take.
    again = fake_stripe.dispute(payment_intent, BASIC_USD)
    await send_stripe(client, fake_stripe, fake_stripe.dispute_event("charge.dispute.created", again["id"]))
    assert len(await ledger_of(session, user.id, LedgerReason.chargeback)) == 1
    assert await balance(client, auth) == BONUS


@pytest.mark.parametrize(
    "payment_intent",
    [pytest.param("pi_not_ours", id="unknown-payment-intent"), pytest.param(None, id="no-payment-intent")],
)
async def test_a_stripe_dispute_of_a_payment_that_is_not_ours_is_stored_and_ignored(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    payment_intent: str | None,
) -> None:
    dispute = fake_stripe.dispute(payment_intent, 1_000)
    for event_type in ("charge.dispute.created", "charge.dispute.closed"):
        event = fake_stripe.dispute_event(event_type, dispute["id"], status="won")
        await send_stripe(client, fake_stripe, event, "ignored")
        [row] = await webhook_rows(session, "stripe", event["id"])
        assert (row.event_type, row.handled_at is not None, row.error) == (event_type, True, None)
    assert await balance(client, auth) == BONUS


async def test_a_refund_or_dispute_of_a_payment_that_paid_no_invoice_of_ours_is_ignored(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
) -> None:
    """A charge that is none of our orders may have paid a subscription invoice: Stripe is asked (the
    Invoice Payments API, since in API 2026-10-28 neither the Charge nor the Dispute names its invoice).
    When the payment intent paid no invoice we granted credits for, the event is stored and ignored, never
    a 500. (Refunds and disputes of our renewals: test_invoices.py.)"""
    _, subscription_id = await stripe_subscription(client, auth, fake_stripe)
    invoice = fake_stripe.invoice_paid(subscription_id)
    await send_stripe(client, fake_stripe, invoice)
    assert await balance(client, auth) == BONUS + PRO
    other_payment = "pi_other_" + uuid.uuid4().hex[:8]

    await send_stripe(client, fake_stripe, fake_stripe.charge_refunded(other_payment, 999, 999), "ignored")
    dispute = fake_stripe.dispute(other_payment, 999)
    await send_stripe(
        client, fake_stripe, fake_stripe.dispute_event("charge.dispute.created", dispute["id"]), "ignored"
    )

    assert await balance(client, auth) == BONUS + PRO
    asked = [r.params for r in fake_stripe.requests if r.path == "/v1/invoice_payments"]
    assert (
        asked
        == [{"payment": {"type": "payment_intent", "payment_intent": other_payment}, "limit": "100"}] * 2
    )


# ==================================================================================================
# Razorpay
# ==================================================================================================


async def razorpay_pack(
    client: httpx.AsyncClient, auth: dict[str, str], fake: FakeRazorpay
) -> tuple[str, str]:
    """Buy the basic pack through Razorpay: (our order id, the Razorpay payment id)."""
    created = await razorpay_order(client, auth)
    checkout = fake.pay(created["razorpay_order_id"])
    assert (await client.post(VERIFY_ORDER, json=checkout, headers=auth)).status_code == 200
    return created["order_id"], checkout["razorpay_payment_id"]


async def test_a_razorpay_dispute_takes_the_credits_once_and_winning_gives_them_back_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    order_id, payment_id = await razorpay_pack(client, auth, fake_razorpay)
    created = fake_razorpay.dispute_event("created", payment_id)
    dispute_id = created["payload"]["dispute"]["entity"]["id"]
    delivery = fake_razorpay.deliver(created)

    await send_webhook(client, RAZORPAY_WEBHOOK, delivery, "processed")
    await send_webhook(client, RAZORPAY_WEBHOOK, delivery, "duplicate")
    await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(created), "processed")  # new event id
    for action in ("under_review", "action_required"):
        event = fake_razorpay.dispute_event(action, payment_id, dispute_id=dispute_id)
        await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(event), "processed")

    assert amounts(await ledger_of(session, user.id, LedgerReason.chargeback)) == [-BASIC]
    assert await balance(client, auth) == BONUS
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount) == ("refunded", BASIC_INR)

    won = fake_razorpay.dispute_event("won", payment_id, dispute_id=dispute_id)
    await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(won), "processed")
    await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(won), "processed")  # new event id

    assert await balance(client, auth) == BONUS + BASIC
    grants = await ledger_of(session, user.id, LedgerReason.purchase)
    assert amounts(grants) == [BASIC, BASIC]
    assert grants[-1].idempotency_key == f"chargeback_won:razorpay:{dispute_id}"
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount) == ("paid", 0)


async def test_a_razorpay_dispute_lost_after_the_credits_were_spent_leaves_a_debt(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    order_id, payment_id = await razorpay_pack(client, auth, fake_razorpay)
    await spend(session, user.id, BONUS + BASIC - 2_000)
    lost = fake_razorpay.dispute_event("lost", payment_id, amount=BASIC_INR // 2)  # a partial dispute

    await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(lost), "processed")

    assert await stored_balance(session, user.id) == 0
    assert amounts(await ledger_of(session, user.id, LedgerReason.chargeback)) == [-2_000]
    [debt] = await debts_of(session, user.id)
    assert (debt.amount, debt.reason) == (BASIC // 2 - 2_000, "chargeback")
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount) == ("paid", BASIC_INR // 2)


async def test_razorpay_retrieval_and_fraud_phases_take_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    _, payment_id = await razorpay_pack(client, auth, fake_razorpay)
    for phase in ("retrieval", "fraud"):
        created = fake_razorpay.dispute_event("created", payment_id, phase=phase)
        dispute_id = created["payload"]["dispute"]["entity"]["id"]
        closed = fake_razorpay.dispute_event("closed", payment_id, phase=phase, dispute_id=dispute_id)
        for event in (created, closed):
            await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(event), "processed")

    assert await balance(client, auth) == BONUS + BASIC
    assert await ledger_of(session, user.id, LedgerReason.chargeback) == []


async def test_a_razorpay_pre_arbitration_of_a_won_chargeback_takes_the_credits_again(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    _, payment_id = await razorpay_pack(client, auth, fake_razorpay)
    created = fake_razorpay.dispute_event("created", payment_id)
    dispute_id = created["payload"]["dispute"]["entity"]["id"]
    won = fake_razorpay.dispute_event("won", payment_id, dispute_id=dispute_id)
    for event in (created, won):
        await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(event), "processed")
    assert await balance(client, auth) == BONUS + BASIC

    reopened = fake_razorpay.dispute_event(
        "created", payment_id, dispute_id=dispute_id, phase="pre_arbitration"
    )
    lost = fake_razorpay.dispute_event("lost", payment_id, dispute_id=dispute_id, phase="pre_arbitration")
    for event in (reopened, lost):
        await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(event), "processed")

    assert await balance(client, auth) == BONUS
    assert amounts(await ledger_of(session, user.id, LedgerReason.chargeback)) == [-BASIC, -BASIC]


async def test_a_razorpay_dispute_of_an_unknown_payment_is_stored_and_ignored(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_razorpay: FakeRazorpay,
) -> None:
    """A payment of a Razorpay order none of our orders made (another integration on the account). A
    dispute of one of ours told before its payment: tests/services/billing/test_payment_order.py."""
    created = await razorpay_order(client, auth)
    checkout = fake_razorpay.pay(created["razorpay_order_id"])
    event = fake_razorpay.dispute_event("created", checkout["razorpay_payment_id"])
    event["payload"]["payment"]["entity"]["order_id"] = "order_" + uuid.uuid4().hex[:14]
    delivery = fake_razorpay.deliver(event)

    await send_webhook(client, RAZORPAY_WEBHOOK, delivery, "ignored")

    [row] = await webhook_rows(session, "razorpay", delivery[1]["x-razorpay-event-id"])
    assert (row.event_type, row.handled_at is not None, row.error) == ("payment.dispute.created", True, None)
    assert await balance(client, auth) == BONUS


# ==================================================================================================
# Dodo
# ==================================================================================================


async def dodo_pack(
    client: httpx.AsyncClient, auth: dict[str, str], fake: FakeDodo, credits_wanted: int = 200
) -> tuple[str, str]:
    """Buy `credits_wanted` credits through Dodo (5 cents each): (our order id, the Dodo payment id)."""
    created = await dodo_checkout(client, auth, credits_wanted)
    paid = fake.payment_succeeded(created["session_id"], total_amount=credits_wanted * 5, currency="USD")
    await send_webhook(client, DODO_WEBHOOK, fake.deliver(paid), "processed")
    return created["order_id"], str(paid["data"]["payment_id"])


async def test_a_dodo_dispute_takes_the_credits_once_and_winning_gives_them_back_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    order_id, payment_id = await dodo_pack(client, auth, fake_dodo)
    opened = fake_dodo.dispute_event("opened", payment_id, "1000", "USD")
    dispute_id = opened["data"]["dispute_id"]
    delivery = fake_dodo.deliver(opened)

    await send_webhook(client, DODO_WEBHOOK, delivery, "processed")
    await send_webhook(client, DODO_WEBHOOK, delivery, "duplicate")
    await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(opened), "processed")  # a new webhook-id
    challenged = fake_dodo.dispute_event("challenged", payment_id, "1000", "USD", dispute_id=dispute_id)
    await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(challenged), "processed")

    assert amounts(await ledger_of(session, user.id, LedgerReason.chargeback)) == [-200_000]
    assert await balance(client, auth) == BONUS
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount) == ("refunded", 1_000)

    won = fake_dodo.dispute_event("won", payment_id, "1000", "USD", dispute_id=dispute_id)
    await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(won), "processed")
    await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(won), "processed")

    assert await balance(client, auth) == BONUS + 200_000
    assert amounts(await ledger_of(session, user.id, LedgerReason.purchase)) == [200_000, 200_000]
    order = await order_row(session, order_id)
    assert (order.status, order.refunded_amount) == ("paid", 0)


async def test_a_dodo_dispute_resolved_by_a_refund_takes_the_credits_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    """Visa RDR: the dispute is lost (`is_resolved_by_rdr`) because a refund was issued; the refund and
    the chargeback are the same money and take the credits once, whichever arrives first."""
    order_id, payment_id = await dodo_pack(client, auth, fake_dodo)
    lost = fake_dodo.dispute_event("lost", payment_id, "1000", "USD", is_resolved_by_rdr=True)
    refund = fake_dodo.refund_succeeded(payment_id, 1_000, "USD")
    for event in (lost, refund):
        await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(event), "processed")

    assert await balance(client, auth) == BONUS
    taken = amounts(await ledger_of(session, user.id, LedgerReason.chargeback)) + amounts(
        await ledger_of(session, user.id, LedgerReason.refund)
    )
    assert sum(taken) == -200_000
    assert (await order_row(session, order_id)).status == "refunded"


async def test_a_cancelled_dodo_dispute_gives_the_credits_back_and_an_expired_one_keeps_them(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    _, cancelled_payment = await dodo_pack(client, auth, fake_dodo, 100)
    _, expired_payment = await dodo_pack(client, auth, fake_dodo, 200)
    for payment_id, ending in ((cancelled_payment, "cancelled"), (expired_payment, "expired")):
        opened = fake_dodo.dispute_event("opened", payment_id, "1", "USD")
        ended = fake_dodo.dispute_event(
            ending, payment_id, "1", "USD", dispute_id=opened["data"]["dispute_id"]
        )
        for event in (opened, ended):
            await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(event), "processed")

    assert await balance(client, auth) == BONUS + 100_000
    assert sorted(amounts(await ledger_of(session, user.id, LedgerReason.chargeback))) == [-200_000, -100_000]


async def test_a_dodo_dispute_of_an_unknown_payment_is_stored_and_ignored(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_dodo: FakeDodo,
) -> None:
    event = fake_dodo.dispute_event("opened", "pay_not_ours", "1000", "USD")
    delivery = fake_dodo.deliver(event)

    await send_webhook(client, DODO_WEBHOOK, delivery, "ignored")

    [row] = await webhook_rows(session, "dodo", delivery[1]["webhook-id"])
    assert (row.event_type, row.handled_at is not None, row.error) == ("dispute.opened", True, None)
    assert await balance(client, auth) == BONUS


def test_the_dodo_dispute_events_parse_as_the_sdks_models(fake_dodo: FakeDodo) -> None:
    def parsed(event: dict[str, Any]) -> Any:
        return json.loads(fake_dodo.deliver(event)[0])

    opened = DisputeOpenedWebhookEvent.model_validate(
        parsed(fake_dodo.dispute_event("opened", "pay_1", "1000", "USD", stage="pre_dispute"))
    )
    assert (opened.data.dispute_status, opened.data.dispute_stage, opened.data.amount) == (
        "dispute_opened",
        "pre_dispute",
        "1000",
    )
    won = DisputeWonWebhookEvent.model_validate(parsed(fake_dodo.dispute_event("won", "pay_1", "1", "USD")))
    assert won.data.dispute_status == "dispute_won"
    lost = DisputeLostWebhookEvent.model_validate(
        parsed(fake_dodo.dispute_event("lost", "pay_1", "1", "USD", is_resolved_by_rdr=True))
    )
    assert lost.data.is_resolved_by_rdr is True
    cancelled = DisputeCancelledWebhookEvent.model_validate(
        parsed(fake_dodo.dispute_event("cancelled", "pay_1", "1", "USD"))
    )
    assert cancelled.type == "dispute.cancelled"
    with pytest.raises(ValueError, match="unknown dispute event"):
        fake_dodo.dispute_event("exploded", "pay_1", "1", "USD")


# ==================================================================================================
# Race (PostgreSQL: real commits, one connection per request)
# ==================================================================================================


async def test_every_event_of_one_dispute_at_once_takes_the_credits_once(
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
            created = await stripe_checkout(client, bearer(container, user))
            completed = fake_stripe.checkout_completed(created["session_id"])
            events.append(("stripe", completed["id"]))
            await send_stripe(client, fake_stripe, completed)
            dispute = fake_stripe.dispute(completed["data"]["object"]["payment_intent"], BASIC_USD)
            opening = fake_stripe.dispute_event("charge.dispute.created", dispute["id"])
            burst = [
                opening,
                resent(fake_stripe, opening),
                fake_stripe.dispute_event("charge.dispute.funds_withdrawn", dispute["id"]),
                fake_stripe.dispute_event("charge.dispute.updated", dispute["id"], status="under_review"),
            ]
            events.extend(("stripe", event["id"]) for event in burst)
            deliveries = [fake_stripe.deliver(event) for event in burst]

            responses = await asyncio.gather(
                *(client.post(STRIPE_WEBHOOK, content=body, headers=headers) for body, headers in deliveries)
            )

        assert [response.status_code for response in responses] == [200] * 4, [r.text for r in responses]
        assert await committed_movements(engine, user.id, LedgerReason.chargeback) == (BONUS, [-BASIC])
        async with engine.connect() as connection:
            refunded = await connection.scalar(
                select(Order.refunded_amount).where(Order.id == uuid.UUID(created["order_id"]))
            )
        assert refunded == BASIC_USD
    finally:
        await cleanup(engine, [user.id], events)
    assert await leftovers(engine, user.id, events) == 0


# --- found in review: a refund while a dispute stands, then the dispute is won ----------------------


async def test_a_razorpay_refund_during_an_open_dispute_then_a_win_leaves_the_credits_taken(
    client, session: AsyncSession, user: User, auth, fake_razorpay: FakeRazorpay
) -> None:
    order_id, payment_id = await razorpay_pack(client, auth, fake_razorpay)
    created = fake_razorpay.dispute_event("created", payment_id)
    dispute_id = created["payload"]["dispute"]["entity"]["id"]
    await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(created), "processed")
    assert await balance(client, auth) == BONUS  # chargeback took the pack

    # The merchant refunds the payment in full while the dispute is open (Razorpay allows it and the
    # refund's proof then wins the dispute).
    refund = fake_razorpay.refund_processed_event(payment_id)
    await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(refund), "processed")
    won = fake_razorpay.dispute_event("won", payment_id, dispute_id=dispute_id)
    await send_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(won), "processed")

    order = await order_row(session, order_id)
    assert order.status == "refunded"  # the money is back with the customer ...
    assert await balance(client, auth) == BONUS  # ... so the pack's credits stay taken


async def test_a_dodo_pre_dispute_refunded_then_cancelled_leaves_the_credits_taken(
    client, session: AsyncSession, user: User, auth, fake_dodo: FakeDodo
) -> None:
    order_id, payment_id = await dodo_pack(client, auth, fake_dodo)
    opened = fake_dodo.dispute_event("opened", payment_id, "1000", "USD", stage="pre_dispute")
    dispute_id = opened["data"]["dispute_id"]
    await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(opened), "processed")
    refund = fake_dodo.refund_succeeded(payment_id, 1_000, "USD")
    await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(refund), "processed")
    cancelled = fake_dodo.dispute_event(
        "cancelled", payment_id, "1000", "USD", dispute_id=dispute_id, stage="pre_dispute"
    )
    await send_webhook(client, DODO_WEBHOOK, fake_dodo.deliver(cancelled), "processed")

    assert (await order_row(session, order_id)).status == "refunded"
    assert await balance(client, auth) == BONUS  # fails: BONUS + 200 credits


async def test_a_renewal_refund_delivered_before_its_invoice_paid_is_retried_until_it_applies(
    client, session: AsyncSession, user: User, auth, fake_stripe: FakeStripe
) -> None:
    _, subscription_id = await stripe_subscription(client, auth, fake_stripe)
    paid = fake_stripe.invoice_paid(subscription_id)  # made at Stripe; its delivery is late
    invoice_id = str(paid["data"]["object"]["id"])
    payment_intent = fake_stripe.payment_intent_of(invoice_id)
    refunded = fake_stripe.charge_refunded(payment_intent, PRO_USD, PRO_USD)

    # Out of order: nothing to take yet, so the refund is refused (500) and Stripe delivers it again.
    body, headers = fake_stripe.deliver(refunded)
    early = await client.post(STRIPE_WEBHOOK, content=body, headers=headers)
    assert early.status_code == 500, early.text
    await send_stripe(client, fake_stripe, paid)
    await send_stripe(client, fake_stripe, refunded)  # the redelivery

    # The invoice was refunded in full, so nothing of it may stay spendable.
    assert await balance(client, auth) == BONUS
    assert amounts(await ledger_of(session, user.id, LedgerReason.refund)) == [-PRO]


__all__ = ["BASIC", "BASIC_INR", "PRO"]


async def test_a_refund_of_another_integrations_subscription_invoice_is_ignored_not_retried(
    client, session: AsyncSession, user: User, auth, fake_stripe: FakeStripe
) -> None:
    """An invoice of a subscription none of our checkouts opened (same Stripe account, other product):
    its refund is none of ours, so it is answered 200 at once, not retried for days."""
    foreign = fake_stripe.invoice_paid("sub_not_ours", amount_paid=PRO_USD, metadata={})
    payment_intent = fake_stripe.payment_intent_of(str(foreign["data"]["object"]["id"]))
    refunded = fake_stripe.charge_refunded(payment_intent, PRO_USD, PRO_USD)
    await send_stripe(client, fake_stripe, refunded, expected="ignored")
    assert await balance(client, auth) == BONUS

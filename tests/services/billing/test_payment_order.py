"""One payment's events in every delivery order, on all three providers: the end state is the same.

Providers promise no order: a refund or a dispute can arrive before the confirmation of the payment it is
about (Razorpay `refund.processed` before `payment.captured`, Stripe `charge.refunded` before
`checkout.session.completed`, Dodo `refund.succeeded` before `payment.succeeded`). Each is matched to its
order through what it carries or what the provider says about the payment, recorded, and applied when the
payment lands (app/services/billing/adjustments.py). These tests deliver the signed webhooks of one
purchase in every order (parametrized by provider and by permutation), then again (redeliveries under the
same event id and the same news re-sent under new ones), and check what the customer sees over HTTP: the
balance, the ledger, the order's status and refunded amount. A property test (hypothesis, derandomized)
does the same for random mixes of confirmations, refunds, a dispute and redeliveries, against the
canonical order.

Helpers: tests/support/payments.py. Amounts of credits are millicredits; every account starts with the
signup bonus.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database
from tests.factories import bearer, make_user
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.committed import cleanup, committed_user
from tests.support.payments import (
    BONUS,
    DODO_WEBHOOK,
    RAZORPAY_WEBHOOK,
    STRIPE_WEBHOOK,
    Outcome,
    PaymentFlow,
    Purchase,
    Step,
    balance,
    deliver,
    expected_state,
    movements,
    order_of,
    payment_flow,
    payment_settings,
    payment_state,
    post_webhook,
    razorpay_order,
    webhook_rows,
)

PROVIDERS = ("stripe", "razorpay", "dodo")


@pytest.fixture
def settings(
    database_url: str, fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo
) -> Settings:
    return payment_settings(database_url, fake_stripe, fake_razorpay, fake_dodo)


@pytest.fixture
def flows(
    fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo
) -> dict[str, PaymentFlow]:
    return {provider: payment_flow(provider, fake_stripe, fake_razorpay, fake_dodo) for provider in PROVIDERS}


async def new_customer(session: AsyncSession, settings: Settings, container: Container) -> dict[str, str]:
    return bearer(container, await make_user(session, settings))


# --- every delivery order ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What happened at the provider, in its real order: the payment, then refunds (fractions of the
    payment), then a dispute of the whole payment and its outcome."""

    refunds: tuple[tuple[int, int], ...] = ()  # (numerator, denominator) of the payment
    dispute: Outcome | None = None

    def labels(self) -> tuple[str, ...]:
        refunds = tuple(f"refund{index}" for index in range(len(self.refunds)))
        disputes = {None: (), "open": ("open",), "won": ("open", "won"), "lost": ("open", "lost")}
        return ("paid", *refunds, *disputes[self.dispute])


SCENARIOS = {
    "partial_refund": Scenario(refunds=((1, 3),)),
    "full_refund": Scenario(refunds=((1, 1),)),
    "dispute_won": Scenario(dispute="won"),
    "dispute_lost": Scenario(dispute="lost"),
}


def _orders() -> list[object]:
    cases = []
    for provider in PROVIDERS:
        for name, scenario in SCENARIOS.items():
            for order in itertools.permutations(scenario.labels()):
                cases.append(pytest.param(provider, name, order, id=f"{provider}-{name}-{','.join(order)}"))
    return cases


def build(flow: PaymentFlow, purchase: Purchase, scenario: Scenario) -> tuple[dict[str, Step], list[int]]:
    """The scenario's events by label (built in the real order) and the refunded amounts."""
    steps = {"paid": flow.confirmations(purchase)[0]}
    refunded = []
    for index, (numerator, denominator) in enumerate(scenario.refunds):
        amount = purchase.amount * numerator // denominator
        refunded.append(amount)
        steps[f"refund{index}"] = flow.refund(purchase, amount)
    if scenario.dispute is not None:
        opened, *decided = flow.dispute(purchase, scenario.dispute)
        steps["open"] = opened
        if decided:
            steps[scenario.dispute] = decided[0]
    return steps, refunded


def expected_movements(
    purchase: Purchase, refunded: list[int], outcome: Outcome | None
) -> list[tuple[str, int]]:
    """The ledger of the canonical order: the bonus, the purchase, each refund's share (cumulative), the
    chargeback of what is left and its give-back when the dispute is won."""
    rows = [("signup_bonus", BONUS), ("purchase", purchase.credits)]
    total = taken = 0
    for amount in refunded:
        total += amount
        share = purchase.credits * min(total, purchase.amount) // purchase.amount - taken
        taken += share
        rows.append(("refund", -share))
    left = purchase.credits - taken
    if outcome is not None and left > 0:
        rows.append(("chargeback", -left))
        if outcome == "won":
            rows.append(("purchase", left))
    return sorted(rows)


@pytest.mark.parametrize(("provider", "scenario_name", "order"), _orders())
async def test_a_refund_or_dispute_in_any_delivery_order_ends_the_same(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    flows: dict[str, PaymentFlow],
    provider: str,
    scenario_name: str,
    order: tuple[str, ...],
) -> None:
    scenario = SCENARIOS[scenario_name]
    flow = flows[provider]
    purchase = await flow.buy(client, await new_customer(session, settings, container))
    steps, refunded = build(flow, purchase, scenario)

    for label in order:
        assert await deliver(client, steps[label]) == "processed", label
    expected = expected_state(purchase, refunded, scenario.dispute)
    assert await payment_state(client, purchase) == expected
    ledger = await movements(client, purchase.auth)
    assert ledger == expected_movements(purchase, refunded, scenario.dispute)

    # Every event again: redelivered under its own id (a duplicate), then re-sent under a new one.
    for label in order:
        assert await deliver(client, steps[label]) == "duplicate", label
        assert await deliver(client, steps[label], again=True) == "processed", label
    assert await payment_state(client, purchase) == expected
    assert await movements(client, purchase.auth) == ledger


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_early_refund_waits_on_the_order_until_the_payment_lands(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    flows: dict[str, PaymentFlow],
    provider: str,
) -> None:
    """The issue's case: the refund first is not lost (it used to be answered `ignored`, and the
    confirmation then credited the whole pack: 10 -> 110 credits). Before the payment lands, the order is
    not paid and nothing is granted; once it lands, the refund takes the pack back."""
    flow = flows[provider]
    purchase = await flow.buy(client, await new_customer(session, settings, container))
    [paid, *_] = flow.confirmations(purchase)
    refund = flow.refund(purchase, purchase.amount)

    assert await deliver(client, refund) == "processed"
    assert await balance(client, purchase.auth) == BONUS
    order = await order_of(client, purchase.auth, purchase.order_id)
    assert (order["status"], order["refunded_amount"]) == ("created", 0)

    assert await deliver(client, paid) == "processed"
    assert await payment_state(client, purchase) == expected_state(purchase, [purchase.amount], None)
    assert await movements(client, purchase.auth) == sorted(
        [("signup_bonus", BONUS), ("purchase", purchase.credits), ("refund", -purchase.credits)]
    )


async def test_every_razorpay_confirmation_of_a_refunded_payment_grants_nothing_more(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    flows: dict[str, PaymentFlow],
) -> None:
    """Razorpay confirms one payment three ways (payment.captured, order.paid, the client's
    verify-order): after an early refund, whichever comes first pays the order and applies the refund."""
    flow = flows["razorpay"]
    purchase = await flow.buy(client, await new_customer(session, settings, container))
    captured, paid, verify = flow.confirmations(purchase)
    refund = flow.refund(purchase, purchase.amount)

    assert await deliver(client, refund) == "processed"
    assert await deliver(client, verify) == "verified"
    assert await deliver(client, paid) == "processed"
    assert await deliver(client, captured) == "processed"

    assert await payment_state(client, purchase) == expected_state(purchase, [purchase.amount], None)


async def test_a_refund_of_another_payment_of_the_same_razorpay_order_is_never_applied_to_it(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    fake_razorpay: FakeRazorpay,
) -> None:
    """A Razorpay order paid twice (the customer paid again; Razorpay refunds the duplicate): the refund of
    the payment that did not pay our order takes nothing, whether it arrives first or last."""
    auth = await new_customer(session, settings, container)
    created = await razorpay_order(client, auth)
    duplicate = fake_razorpay.pay(created["razorpay_order_id"])["razorpay_payment_id"]
    paying = fake_razorpay.pay(created["razorpay_order_id"])["razorpay_payment_id"]
    refund = fake_razorpay.refund_processed_event(duplicate)
    captured = fake_razorpay.payment_captured_event(created["razorpay_order_id"], paying)
    duplicate_captured = fake_razorpay.payment_captured_event(created["razorpay_order_id"], duplicate)

    first = await post_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(refund))
    assert first.json() == {"status": "processed"}  # recorded: it is about our order
    assert (await post_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(captured))).status_code == 200
    late = await post_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(refund))  # re-sent, new id
    assert late.json() == {"status": "ignored"}  # now we know: not the payment that paid the order
    await post_webhook(client, RAZORPAY_WEBHOOK, fake_razorpay.deliver(duplicate_captured))

    assert await balance(client, auth) == BONUS + 100_000
    order = await order_of(client, auth, created["order_id"])
    assert (order["status"], order["refunded_amount"], order["provider_payment_id"]) == ("paid", 0, paying)


# --- early events the provider has to tell us about -------------------------------------------------


async def test_an_early_stripe_dispute_is_matched_through_the_checkout_session_of_its_payment_intent(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    flows: dict[str, PaymentFlow],
    fake_stripe: FakeStripe,
) -> None:
    """A Dispute carries no metadata: Stripe is asked which Checkout Session made the payment intent. When
    Stripe cannot answer, the dispute is refused (500) and applied on redelivery."""
    flow = flows["stripe"]
    purchase = await flow.buy(client, await new_customer(session, settings, container))
    [paid] = flow.confirmations(purchase)
    opened, lost = flow.dispute(purchase, "lost")

    fake_stripe.fail_session_list_next(503)
    refused = await opened.send(client, False)
    assert refused.status_code == 500, refused.text
    assert refused.json()["error"] == "webhook_processing_failed"
    assert await deliver(client, opened) == "processed"  # Stripe delivers it again
    asked = [
        r.params for r in fake_stripe.requests if r.path == "/v1/checkout/sessions" and r.method == "GET"
    ]
    assert asked[-1] == {"payment_intent": purchase.payment_id, "limit": "1"}
    for step in (lost, paid):
        assert await deliver(client, step) == "processed"

    assert await payment_state(client, purchase) == expected_state(purchase, [], "lost")


async def test_an_early_dodo_refund_is_matched_through_dodos_record_of_the_payment(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    flows: dict[str, PaymentFlow],
    fake_dodo: FakeDodo,
) -> None:
    """A Dodo refund names only its payment: Dodo is asked for the payment (its checkout, our metadata).
    When Dodo cannot answer, the refund is refused (500) and applied on redelivery."""
    flow = flows["dodo"]
    purchase = await flow.buy(client, await new_customer(session, settings, container))
    [paid] = flow.confirmations(purchase)
    refund = flow.refund(purchase, purchase.amount // 2)

    fake_dodo.fail_payment_lookup_next(500)
    refused = await refund.send(client, False)
    assert refused.status_code == 500, refused.text
    assert await deliver(client, refund) == "processed"
    looked_up = [r.url.path for r in fake_dodo.requests if r.url.path.startswith("/payments/")]
    assert looked_up == [f"/payments/{purchase.payment_id}"] * 2
    assert await deliver(client, paid) == "processed"

    assert await payment_state(client, purchase) == expected_state(purchase, [purchase.amount // 2], None)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_refund_of_a_payment_that_is_no_order_of_ours_is_ignored(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    provider: str,
) -> None:
    """Another integration's payment on the same account: answered 200 `ignored` at once (not retried),
    stored in the inbox, nothing moved."""
    auth = await new_customer(session, settings, container)
    if provider == "stripe":
        event = fake_stripe.charge_refunded(f"pi_other_{uuid.uuid4().hex[:8]}", 999, 999)
        delivery, path = fake_stripe.deliver(event), STRIPE_WEBHOOK
        event_id = str(event["id"])
    elif provider == "razorpay":
        created = await razorpay_order(client, auth)
        payment_id = fake_razorpay.pay(created["razorpay_order_id"])["razorpay_payment_id"]
        event = fake_razorpay.refund_processed_event(payment_id)
        event["payload"]["payment"]["entity"]["order_id"] = f"order_{uuid.uuid4().hex[:14]}"
        delivery, path = fake_razorpay.deliver(event), RAZORPAY_WEBHOOK
        event_id = delivery[1]["x-razorpay-event-id"]
    else:
        event = fake_dodo.refund_succeeded(f"pay_other_{uuid.uuid4().hex[:8]}", 999, "USD")
        delivery, path = fake_dodo.deliver(event), DODO_WEBHOOK
        event_id = delivery[1]["webhook-id"]

    response = await post_webhook(client, path, delivery)

    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    [row] = await webhook_rows(session, provider, event_id)
    assert (row.handled_at is not None, row.error) == (True, None)
    assert await balance(client, auth) == BONUS


# --- all at once (real commits, every database) -----------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_confirmation_refund_and_dispute_delivered_at_once_end_as_in_order(
    committing: tuple[FastAPI, Database],
    engine: AsyncEngine,
    settings: Settings,
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    provider: str,
) -> None:
    """Each request on its own connection and transaction: the confirmation, a partial refund, a dispute's
    opening and loss, and a copy of each, all at once. Whatever runs first, the order's row queues them;
    a delivery refused for a transient database error is delivered again, as providers do."""
    app, database = committing
    user = await committed_user(database, settings)
    steps: list[Step] = []
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            flow = payment_flow(provider, fake_stripe, fake_razorpay, fake_dodo)
            purchase = await flow.buy(client, bearer(app.state.container, user))
            refund = purchase.amount // 4
            steps = [flow.confirmations(purchase)[0], flow.refund(purchase, refund)]
            steps += flow.dispute(purchase, "lost")

            sends = [step.send(client, again) for step in steps for again in (False, True)]
            responses = await asyncio.gather(*sends)
            for step, response in zip([s for s in steps for _ in (0, 1)], responses, strict=True):
                if response.status_code != 200:  # e.g. 503 database_unavailable: the provider retries
                    assert response.status_code in (500, 503), response.text
                    await deliver(client, step)

            assert await payment_state(client, purchase) == expected_state(purchase, [refund], "lost")
    finally:
        await cleanup(engine, [user.id], [sent for step in steps for sent in step.sent])


# --- any interleaving (property) --------------------------------------------------------------------


@dataclass(frozen=True)
class Interleaving:
    """One payment's story and the order its events are delivered in."""

    refunds: tuple[int, ...]  # per mille of the payment, in the order they happened
    dispute: Outcome | None
    order: tuple[int, ...]  # a permutation of the events' positions in the canonical order
    again: tuple[tuple[int, bool], ...]  # events delivered once more: (position, under a new event id)


@st.composite
def interleavings(draw: st.DrawFn, confirmations: int) -> Interleaving:
    # At least 2 per mille, so that every refund is at least one minor unit of every provider's price.
    first = draw(st.one_of(st.just(0), st.integers(min_value=2, max_value=1000)))
    second = draw(st.sampled_from([0, 1000 - first, (1000 - first) // 2]))
    refunds = tuple(part for part in (first, second) if part >= 2)
    dispute = draw(st.sampled_from([None, "open", "won", "lost"]))
    count = confirmations + len(refunds) + {None: 0, "open": 1, "won": 2, "lost": 2}[dispute]
    order = tuple(draw(st.permutations(range(count))))
    again = tuple(draw(st.lists(st.tuples(st.integers(0, count - 1), st.booleans()), max_size=3)))
    return Interleaving(refunds, dispute, order, again)


async def story(
    flow: PaymentFlow, client: httpx.AsyncClient, auth: dict[str, str], case: Interleaving
) -> tuple[Purchase, list[Step], list[int]]:
    """Buy and pay, then the story's events in the canonical order: confirmations, refunds, dispute."""
    purchase = await flow.buy(client, auth)
    steps = list(flow.confirmations(purchase))
    refunded = [purchase.amount * part // 1000 for part in case.refunds]
    steps += [flow.refund(purchase, amount) for amount in refunded]
    if case.dispute is not None:
        steps += flow.dispute(purchase, case.dispute)
    return purchase, steps, refunded


@pytest.mark.parametrize("provider", PROVIDERS)
@hypothesis_settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_interleaving_of_one_payments_events_ends_as_the_canonical_order(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    flows: dict[str, PaymentFlow],
    provider: str,
    data: st.DataObject,
) -> None:
    flow = flows[provider]
    confirmations = 3 if provider == "razorpay" else 1  # payment.captured, order.paid, verify-order
    case = data.draw(interleavings(confirmations))

    canonical, steps, refunded = await story(
        flow, client, await new_customer(session, settings, container), case
    )
    for step in steps:
        await deliver(client, step)
    expected = await payment_state(client, canonical)
    assert expected == expected_state(canonical, refunded, case.dispute)

    shuffled, steps, _ = await story(flow, client, await new_customer(session, settings, container), case)
    for position in case.order:
        await deliver(client, steps[position])
        for again_position, new_id in case.again:
            if again_position == position:
                await deliver(client, steps[position], again=new_id)

    assert await payment_state(client, shuffled) == expected, [steps[i].label for i in case.order]

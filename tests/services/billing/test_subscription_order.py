"""Resubscribing keeps Pro, whatever order the two subscriptions' events arrive in (Stripe and Dodo).

A subscriber cancels at the end of the period (subscription A) and subscribes again (B) before A ends.
When A's end arrives, the plan must follow the subscriptions still running: B is active and paid, so the
user stays on Pro. Every delivery order of A's payment, A's cancellation at period end, B's payment and
A's end is tried (parametrized by provider and permutation); each ends with Pro and both periods'
credits, seen through `GET users/credits`.

Helpers: tests/support/payments.py.
"""

from __future__ import annotations

import itertools
import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.payments import (
    BONUS,
    CHECKOUT,
    DODO_WEBHOOK,
    PRO,
    STRIPE_WEBHOOK,
    Step,
    balance,
    deliver,
    payment_settings,
    plan_of,
    post_webhook,
    set_dodo_product,
    stripe_subscription,
)

EVENTS = ("a_paid", "a_cancels_at_period_end", "b_paid", "a_ended")


@pytest.fixture
def settings(
    database_url: str, fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo
) -> Settings:
    return payment_settings(database_url, fake_stripe, fake_razorpay, fake_dodo)


def _steps(path: str, deliveries: dict[str, tuple[bytes, dict[str, str]]]) -> dict[str, Step]:
    def step(label: str, delivery: tuple[bytes, dict[str, str]]) -> Step:
        async def send(client: httpx.AsyncClient, _again: bool) -> httpx.Response:
            return await post_webhook(client, path, delivery)

        return Step(label, send)

    return {label: step(label, delivery) for label, delivery in deliveries.items()}


async def stripe_story(client: httpx.AsyncClient, auth: dict[str, str], fake: FakeStripe) -> dict[str, Step]:
    """The EVENTS, built in the order they happen at Stripe, and B's own end ("b_ended")."""
    _, first = await stripe_subscription(client, auth, fake)
    a_paid = fake.invoice_paid(first)
    a_cancels = fake.subscription_updated(first, cancel_at_period_end=True)
    _, second = await stripe_subscription(client, auth, fake)
    b_paid = fake.invoice_paid(second)
    a_ended = fake.subscription_deleted(first)
    b_ended = fake.subscription_deleted(second)
    events = dict(zip(EVENTS, (a_paid, a_cancels, b_paid, a_ended), strict=True)) | {"b_ended": b_ended}
    return _steps(STRIPE_WEBHOOK, {label: fake.deliver(event) for label, event in events.items()})


async def dodo_story(
    client: httpx.AsyncClient, auth: dict[str, str], fake: FakeDodo, session: AsyncSession
) -> dict[str, Step]:
    """The same with Dodo: two checkouts of Pro, the subscriptions carrying each checkout's metadata."""
    await set_dodo_product(session, "pro", "pdt_pro_monthly")
    metadata = []
    for _ in range(2):
        response = await client.post(CHECKOUT, json={"provider": "dodo", "plan_id": "pro"}, headers=auth)
        assert response.status_code == 200, response.text
        metadata.append(fake.checkouts[response.json()["session_id"]]["metadata"])
    first, second = f"sub_a_{uuid.uuid4().hex[:12]}", f"sub_b_{uuid.uuid4().hex[:12]}"
    events = {
        "a_paid": fake.subscription_event("active", first, metadata[0]),
        "a_cancels_at_period_end": fake.subscription_event(
            "updated", first, metadata[0], cancel_at_next_billing_date=True
        ),
        "b_paid": fake.subscription_event("active", second, metadata[1]),
        "a_ended": fake.subscription_event("cancelled", first, metadata[0]),
        "b_ended": fake.subscription_event("expired", second, metadata[1]),
    }
    return _steps(DODO_WEBHOOK, {label: fake.deliver(event) for label, event in events.items()})


async def story(
    provider: str,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    fake_stripe: FakeStripe,
    fake_dodo: FakeDodo,
) -> dict[str, Step]:
    if provider == "stripe":
        return await stripe_story(client, auth, fake_stripe)
    return await dodo_story(client, auth, fake_dodo, session)


@pytest.mark.parametrize(
    "order",
    [pytest.param(order, id=",".join(order)) for order in itertools.permutations(EVENTS)],
)
@pytest.mark.parametrize("provider", ["stripe", "dodo"])
async def test_a_resubscription_keeps_pro_when_the_old_subscription_ends(
    client: httpx.AsyncClient,
    session: AsyncSession,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_dodo: FakeDodo,
    provider: str,
    order: tuple[str, ...],
) -> None:
    steps = await story(provider, client, auth, session, fake_stripe, fake_dodo)

    for label in order:
        await deliver(client, steps[label])

    assert await plan_of(client, auth) == "pro"
    assert await balance(client, auth) == BONUS + 2 * PRO


@pytest.mark.parametrize("provider", ["stripe", "dodo"])
async def test_the_plan_goes_back_to_free_when_the_last_subscription_ends(
    client: httpx.AsyncClient,
    session: AsyncSession,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_dodo: FakeDodo,
    provider: str,
) -> None:
    steps = await story(provider, client, auth, session, fake_stripe, fake_dodo)
    for label in EVENTS:
        await deliver(client, steps[label])
    assert await plan_of(client, auth) == "pro"

    await deliver(client, steps["b_ended"])

    assert await plan_of(client, auth) == "free"
    assert await balance(client, auth) == BONUS + 2 * PRO  # the credits of paid periods stay

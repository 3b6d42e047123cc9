"""What a payment confirmation must prove before it grants anything, on all three providers.

* The money: a confirmation whose amount is less than the order's price, or in another currency, grants
  nothing; the order fails as `amount_mismatch`, and no later confirmation of that payment pays it.
* The event id: it is what redeliveries are recognised by, and Razorpay's is an unsigned header. An id
  that is empty, longer than 255 characters or not printable ASCII answers 400 in the error shape before
  anything is stored; the longest valid one is accepted.

Helpers: tests/support/payments.py.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.http import assert_error
from tests.support.payments import (
    BONUS,
    STRIPE_WEBHOOK,
    VERIFY_ORDER,
    WEBHOOKS,
    PaymentFlow,
    Purchase,
    balance,
    movements,
    order_of,
    payment_flow,
    payment_settings,
    post_webhook,
    webhook_rows,
)

PROVIDERS = ("stripe", "razorpay", "dodo")


@pytest.fixture
def settings(
    database_url: str, fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo
) -> Settings:
    return payment_settings(database_url, fake_stripe, fake_razorpay, fake_dodo)


@pytest.fixture
def fakes(fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo) -> dict[str, Any]:
    return {"stripe": fake_stripe, "razorpay": fake_razorpay, "dodo": fake_dodo}


@pytest.fixture
def flows(fakes: dict[str, Any]) -> dict[str, PaymentFlow]:
    return {provider: payment_flow(provider, *fakes.values()) for provider in PROVIDERS}


def confirmation(provider: str, purchase: Purchase) -> dict[str, Any]:
    """A copy of the provider's (first) confirmation of the purchase, to change before signing."""
    return copy.deepcopy(purchase.confirmation[0])


def deliver(
    fakes: dict[str, Any], provider: str, event: dict[str, Any], event_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """Sign and deliver `event` as its provider does, under `event_id` if given (Stripe's is in the body,
    Razorpay's in the `x-razorpay-event-id` header, Dodo's in the signed `webhook-id`)."""
    if provider == "stripe":
        if event_id is not None:
            event = {**event, "id": event_id}
        delivery: tuple[bytes, dict[str, str]] = fakes["stripe"].deliver(event)
    elif provider == "razorpay":
        delivery = fakes["razorpay"].deliver(event, event_id=event_id)
    else:
        delivery = fakes["dodo"].deliver(event, msg_id=event_id)
    return delivery


# --- the money ---------------------------------------------------------------------------------------


def paid_less(provider: str, event: dict[str, Any], purchase: Purchase) -> None:
    short = purchase.amount - 1
    if provider == "stripe":
        event["data"]["object"].update(amount_subtotal=short, amount_total=short)
    elif provider == "razorpay":
        event["payload"]["payment"]["entity"]["amount"] = short
    else:
        event["data"].update(total_amount=short, settlement_amount=short)


def paid_in_another_currency(provider: str, event: dict[str, Any], _purchase: Purchase) -> None:
    if provider == "stripe":
        event["data"]["object"]["currency"] = "eur"
    elif provider == "razorpay":
        event["payload"]["payment"]["entity"]["currency"] = "USD"
    else:
        event["data"].update(currency="EUR", settlement_currency="EUR")


def paid_with_a_discount(provider: str, event: dict[str, Any], _purchase: Purchase) -> None:
    """Stripe only: the session's items at their price, minus a discount."""
    assert provider == "stripe"
    session = event["data"]["object"]
    session["total_details"]["amount_discount"] = 100
    session["amount_total"] -= 100


MISMATCHES = [
    pytest.param(provider, change, id=f"{provider}-{change.__name__}")
    for provider in PROVIDERS
    for change in (paid_less, paid_in_another_currency)
] + [pytest.param("stripe", paid_with_a_discount, id="stripe-paid_with_a_discount")]


@pytest.mark.parametrize(("provider", "change"), MISMATCHES)
async def test_a_payment_that_does_not_cover_the_price_grants_nothing_and_fails_the_order(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fakes: dict[str, Any],
    flows: dict[str, PaymentFlow],
    provider: str,
    change: Any,
) -> None:
    purchase = await flows[provider].buy(client, auth)
    event = confirmation(provider, purchase)
    change(provider, event, purchase)

    response = await post_webhook(client, WEBHOOKS[provider], deliver(fakes, provider, event))
    assert (response.status_code, response.json()) == (200, {"status": "processed"}), response.text
    # The same news again (re-sent under a new event id) changes nothing.
    again = await post_webhook(client, WEBHOOKS[provider], deliver(fakes, provider, event))
    assert again.status_code == 200, again.text

    assert await balance(client, auth) == BONUS
    assert await movements(client, auth) == [("signup_bonus", BONUS)]
    order = await order_of(client, auth, purchase.order_id)
    assert (order["status"], order["paid_at"]) == ("failed", None)
    if provider == "razorpay":
        # The client's own verification of that payment does not pay the order either.
        verified = await client.post(VERIFY_ORDER, json=purchase.extra["checkout"], headers=auth)
        assert_error(verified, 409, "amount_mismatch")
        assert await balance(client, auth) == BONUS


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_payment_of_the_price_or_more_grants_the_pack(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fakes: dict[str, Any],
    flows: dict[str, PaymentFlow],
    provider: str,
) -> None:
    """More money (Stripe: tax added on top; Razorpay and Dodo: a larger amount) still pays: what is
    checked is that the price is covered, in the order's currency (case aside)."""
    purchase = await flows[provider].buy(client, auth)
    event = confirmation(provider, purchase)
    if provider == "stripe":
        event["data"]["object"].update(amount_total=purchase.amount + 120, currency="USD")
        event["data"]["object"]["total_details"]["amount_tax"] = 120
    elif provider == "razorpay":
        event["payload"]["payment"]["entity"]["amount"] = purchase.amount + 1
    else:
        event["data"].update(total_amount=purchase.amount + 80, tax=80, currency="usd")

    response = await post_webhook(client, WEBHOOKS[provider], deliver(fakes, provider, event))

    assert response.json() == {"status": "processed"}, response.text
    assert await balance(client, auth) == BONUS + purchase.credits
    assert (await order_of(client, auth, purchase.order_id))["status"] == "paid"


# --- the event id ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param("e" * 256, id="256-characters"),
        pytest.param("e" * 10_000, id="10000-characters"),
        pytest.param("evt with spaces", id="not-printable"),
    ],
)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_signed_webhook_with_a_bad_event_id_is_400_and_changes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    auth: dict[str, str],
    fakes: dict[str, Any],
    flows: dict[str, PaymentFlow],
    provider: str,
    event_id: str,
) -> None:
    purchase = await flows[provider].buy(client, auth)

    response = await post_webhook(
        client, WEBHOOKS[provider], deliver(fakes, provider, confirmation(provider, purchase), event_id)
    )

    assert_error(response, 400, "invalid_event_id")
    assert await webhook_rows(session, provider) == []
    assert await balance(client, auth) == BONUS
    assert (await order_of(client, auth, purchase.order_id))["status"] == "created"


async def test_an_empty_razorpay_event_id_header_is_400(
    client: httpx.AsyncClient,
    session: AsyncSession,
    auth: dict[str, str],
    fakes: dict[str, Any],
    flows: dict[str, PaymentFlow],
) -> None:
    purchase = await flows["razorpay"].buy(client, auth)
    body, headers = deliver(fakes, "razorpay", confirmation("razorpay", purchase))

    response = await client.post(
        WEBHOOKS["razorpay"], content=body, headers={**headers, "x-razorpay-event-id": ""}
    )

    assert_error(response, 400, "invalid_event_id")
    assert await webhook_rows(session, "razorpay") == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_longest_valid_event_id_is_accepted_and_deduplicated(
    client: httpx.AsyncClient,
    session: AsyncSession,
    auth: dict[str, str],
    fakes: dict[str, Any],
    flows: dict[str, PaymentFlow],
    provider: str,
) -> None:
    purchase = await flows[provider].buy(client, auth)
    event_id = "e" * 255

    first = await post_webhook(
        client, WEBHOOKS[provider], deliver(fakes, provider, confirmation(provider, purchase), event_id)
    )
    second = await post_webhook(
        client, WEBHOOKS[provider], deliver(fakes, provider, confirmation(provider, purchase), event_id)
    )

    assert (first.json(), second.json()) == ({"status": "processed"}, {"status": "duplicate"})
    [row] = await webhook_rows(session, provider)
    assert row.event_id == event_id
    assert await balance(client, auth) == BONUS + purchase.credits


async def test_a_signed_stripe_event_of_an_overlong_type_is_stored_and_ignored(
    client: httpx.AsyncClient, session: AsyncSession, fake_stripe: FakeStripe
) -> None:
    event = fake_stripe.event("x" * 300, {"id": "obj_1", "object": "unknown"})

    response = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(event))

    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    [row] = await webhook_rows(session, "stripe", event["id"])
    assert row.event_type == "x" * 100

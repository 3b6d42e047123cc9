"""The one applier of typed payment events (app/services/billing/webhooks.py), without any provider.

Each test hands it the `PaymentEvent`s a gateway reads from its provider's webhooks, about an order made
directly (tests/factories.py), through a stub gateway that answers the lookups. The rules are the same for
every provider, so each test runs for all three. The providers' own events are tested end to end over
HTTP: tests/routers/test_billing.py, and here test_payment_order.py, test_payment_checks.py,
test_subscription_order.py, test_disputes.py and test_invoices.py.

Amounts of credits are millicredits; every account starts with the signup bonus (10 credits).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.integrations.payments.base import (
    Checkout,
    CheckoutPaid,
    CheckoutRequest,
    Disputed,
    InvalidSignature,
    InvoicePayment,
    InvoiceSubscription,
    OrderRef,
    PaymentEvent,
    PaymentRef,
    Refunded,
    Unhandled,
)
from app.models import Order, Provider, User
from app.services import credits
from app.services.billing import webhooks
from tests.conftest import make_settings
from tests.factories import make_order
from tests.support.payments import BONUS, order_row

PROVIDERS = [Provider.stripe, Provider.razorpay, Provider.dodo]


class StubGateway:
    """A payment gateway that was told which checkout made which payment, and bills no invoices."""

    client_key: str | None = None
    webhooks_enabled = True

    def __init__(self, checkouts: Mapping[str, OrderRef] | None = None) -> None:
        self.checkouts = dict(checkouts or {})
        self.asked: list[str] = []

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        raise AssertionError("the applier opens no checkout")

    def verify(self, body: bytes, headers: Mapping[str, str]) -> tuple[str, PaymentEvent]:
        raise AssertionError("the applier verifies nothing")

    def read_event(self, payload: dict[str, Any]) -> PaymentEvent:
        raise AssertionError("the applier reads no stored event")

    def verify_client_payment(self, checkout_id: str, payment_id: str, signature: str) -> None:
        raise InvalidSignature("webhooks only")

    async def checkout_of(self, payment_id: str) -> OrderRef | None:
        self.asked.append(payment_id)
        return self.checkouts.get(payment_id)

    async def invoices_paid_by(self, payment_id: str) -> list[InvoicePayment]:
        return []

    async def invoice_subscription(self, invoice_id: str) -> InvoiceSubscription | None:
        return None

    async def aclose(self) -> None:
        return None


async def apply(session: AsyncSession, gateway: StubGateway, provider: Provider, event: PaymentEvent) -> bool:
    """The applier with default settings (a paid order's tax invoice reads them)."""
    return await webhooks.apply(session, gateway, provider, event, settings=make_settings())


def paid(order: Order, ref: OrderRef) -> CheckoutPaid:
    """The provider says `pay_1` paid the order named by `ref` its price."""
    amount, currency = order.amount, order.currency
    return CheckoutPaid(order=ref, payment_id="pay_1", amount=amount, currency=currency, type="p", payload={})


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("named_by", ["our order id", "the provider's checkout"])
async def test_a_paid_checkout_is_found_by_our_id_or_the_providers_checkout_and_paid_once(
    session: AsyncSession, user: User, provider: Provider, named_by: str
) -> None:
    order = await make_order(session, user, provider=provider.value, provider_order_id="chk_1")
    ref = OrderRef(order_id=order.id) if named_by == "our order id" else OrderRef(checkout_id="chk_1")

    first = await apply(session, StubGateway(), provider, paid(order, ref))
    again = await apply(session, StubGateway(), provider, paid(order, ref))

    assert (first, again) == (True, True)
    assert (await order_row(session, order.id)).status == "paid"
    assert await credits.balance_of(session, user.id) == BONUS + order.credits


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_event_naming_another_providers_order_is_ignored(
    session: AsyncSession, user: User, provider: Provider
) -> None:
    other = next(candidate for candidate in PROVIDERS if candidate is not provider)
    order = await make_order(session, user, provider=other.value, provider_order_id="chk_1")

    for ref in (OrderRef(order_id=order.id), OrderRef(checkout_id="chk_1")):
        assert await apply(session, StubGateway(), provider, paid(order, ref)) is False

    assert (await order_row(session, order.id)).status == "created"
    assert await credits.balance_of(session, user.id) == BONUS


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("cumulative", [False, True], ids=["own-amount", "refunded-total"])
async def test_a_refund_told_before_the_payment_waits_on_the_order_found_through_the_gateway(
    session: AsyncSession, user: User, provider: Provider, cumulative: bool
) -> None:
    order = await make_order(session, user, provider=provider.value)
    gateway = StubGateway({"pay_1": OrderRef(order_id=order.id)})
    refund = Refunded(
        payment=PaymentRef("pay_1"),
        refund_id="re_1",
        amount=order.amount // 4,
        cumulative=cumulative,
        type="refunded",
        payload={},
    )

    assert await apply(session, gateway, provider, refund) is True
    assert await credits.balance_of(session, user.id) == BONUS  # nothing was granted yet
    assert await apply(session, gateway, provider, paid(order, OrderRef(order_id=order.id))) is True

    assert gateway.asked == ["pay_1"]
    row = await order_row(session, order.id)
    assert (row.status, row.refunded_amount) == ("paid", order.amount // 4)
    share = order.credits * (order.amount // 4) // order.amount  # the refunded part, rounded down
    assert await credits.balance_of(session, user.id) == BONUS + order.credits - share


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("currency", ["USD", "EUR"], ids=["order-currency", "another-currency"])
async def test_a_chargeback_takes_its_share_or_the_whole_payment_when_its_amount_is_not_comparable(
    session: AsyncSession, user: User, provider: Provider, currency: str
) -> None:
    order = await make_order(session, user, provider=provider.value)
    gateway = StubGateway()
    await apply(session, gateway, provider, paid(order, OrderRef(order_id=order.id)))
    dispute = Disputed(
        payment=PaymentRef("pay_1"),
        dispute_id="dp_1",
        effect="chargeback",
        amount=order.amount // 2,
        currency=currency,
        type="disputed",
        payload={},
    )

    assert await apply(session, gateway, provider, dispute) is True

    assert gateway.asked == []  # the payment is the order's: no lookup
    disputed = order.amount // 2 if currency == order.currency else order.amount
    taken = order.credits * disputed // order.amount
    assert await credits.balance_of(session, user.id) == BONUS + order.credits - taken


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_refund_or_dispute_of_no_order_of_ours_and_an_unhandled_event_are_ignored(
    session: AsyncSession, user: User, provider: Provider
) -> None:
    gateway = StubGateway()
    events: list[PaymentEvent] = [
        Refunded(payment=PaymentRef("pay_elsewhere"), refund_id="re_1", amount=100, type="r", payload={}),
        Disputed(
            payment=PaymentRef("pay_elsewhere"), dispute_id="dp_1", effect="chargeback", type="d", payload={}
        ),
        Unhandled(type="customer.created", payload={}),
    ]

    assert [await apply(session, gateway, provider, event) for event in events] == [False] * 3
    assert await credits.balance_of(session, user.id) == BONUS

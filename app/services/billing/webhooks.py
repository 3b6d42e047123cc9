"""Payment webhooks: verified by the provider's gateway (which reads them into typed events), recorded in
the webhook inbox, and applied once by one applier of typed events, the same for every provider.

Providers promise no order, so a refund or a dispute can be told before the payment it is about. Such an
event is matched to its order through what it carries (our metadata, the provider's checkout) or what the
provider says about its payment (`PaymentGateway.checkout_of`), and recorded against the order, which
applies it when the payment lands (adjustments.py). A refund or dispute of a payment that is none of our
orders may be a subscription invoice's (invoices.py); an event about anything else (another integration's
payment) is stored and answered "ignored"."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.integrations.payments.base import (
    CheckoutPaid,
    CheckoutPending,
    Disputed,
    InvalidSignature,
    PaymentEvent,
    PaymentFailed,
    PaymentGateway,
    PaymentRef,
    Refunded,
    SubscriptionChanged,
    SubscriptionPaid,
    TaxDetails,
    Unhandled,
)
from app.models import Order, Provider, WebhookEvent
from app.repositories.billing import OrderRepository
from app.services import webhook_inbox
from app.services.billing import disputes, gateways, invoices, orders, subscriptions
from app.services.webhook_inbox import Outcome

log = structlog.get_logger("app.payment_webhooks")


async def receive(
    session: AsyncSession, ctx: Container, provider: Provider, body: bytes, headers: Mapping[str, str]
) -> Outcome:
    """One delivery of the provider's webhook: 400 invalid_signature (logged, without the payload) when
    its signature does not hold; otherwise recorded once in the inbox and applied."""
    gateway = gateways.webhook_gateway(ctx, provider)
    try:
        event_id, event = gateway.verify(body, headers)
    except InvalidSignature as exc:
        raise await webhook_inbox.refused(session, provider.value, str(exc)) from exc

    async def apply_it() -> bool:
        return await apply(session, gateway, provider, event, settings=ctx.settings)

    return await webhook_inbox.receive(session, provider.value, event_id, event.type, event.payload, apply_it)


async def replayer(session: AsyncSession, ctx: Container, stored: WebhookEvent) -> webhook_inbox.Handler:
    """The effect of a stored (verified when it arrived) event of a payment provider: read again from
    its stored body by the provider's gateway, applied by `apply` like a live delivery."""
    provider = Provider(stored.provider)
    gateway = gateways.webhook_gateway(ctx, provider)
    event = gateway.read_event(stored.payload)

    async def apply_it() -> bool:
        return await apply(session, gateway, provider, event, settings=ctx.settings)

    return apply_it


async def apply(
    session: AsyncSession,
    gateway: PaymentGateway,
    provider: Provider,
    event: PaymentEvent,
    *,
    settings: Settings,
) -> bool:
    """Apply one event; False when it is about nothing of ours (or nothing we act on). `settings` make
    the tax invoice of an order it pays."""
    if isinstance(event, CheckoutPaid | CheckoutPending | PaymentFailed):
        return await _checkout(session, provider, event, settings)
    if isinstance(event, Refunded):
        return await _refunded(session, gateway, provider, event)
    if isinstance(event, Disputed):
        return await _disputed(session, gateway, provider, event)
    if isinstance(event, SubscriptionPaid):
        await subscriptions.paid(
            session,
            provider=provider,
            subscription_id=event.subscription_id,
            subscriber=event.subscriber,
            period_key=_period_key(provider, event),
            current_period_end=event.current_period_end,
        )
        return True
    if isinstance(event, SubscriptionChanged):
        changed = await subscriptions.changed(
            session,
            provider=provider,
            subscription_id=event.subscription_id,
            status=event.status,
            cancel_at_period_end=event.cancel_at_period_end,
            current_period_end=event.current_period_end,
            ended=event.ended,
            subscriber=event.subscriber,
        )
        return changed is not None
    assert isinstance(event, Unhandled)
    return False


async def _checkout(
    session: AsyncSession,
    provider: Provider,
    event: CheckoutPaid | CheckoutPending | PaymentFailed,
    settings: Settings,
) -> bool:
    order = await orders.find(session, provider, event.order)
    if order is None:
        return False
    if isinstance(event, PaymentFailed):
        await orders.fail(session, order, event.reason)
        return True
    _record_tax(order, event.tax)
    if isinstance(event, CheckoutPaid):
        if event.subscription_id is not None:
            order.provider_subscription_id = event.subscription_id
        paid, currency = event.amount, event.currency
        await orders.payment_received(
            session, order, event.payment_id, amount=paid, currency=currency, settings=settings
        )
    return True


def _record_tax(order: Order, tax: TaxDetails | None) -> None:
    if tax is None:
        return
    if tax.country is not None:
        order.billing_country = tax.country
    if tax.tax_ids:
        order.customer_tax_ids = [{"type": item.type, "value": item.value} for item in tax.tax_ids]
    if tax.tax_amount is not None:
        order.tax_amount = tax.tax_amount


def _period_key(provider: Provider, event: SubscriptionPaid) -> str:
    """The ledger key of a paid period's credits: its invoice's, or the subscription's and period's."""
    if event.invoice_id is not None:
        return invoices.grant_key(provider, event.invoice_id)
    return f"{provider.value}_subscription:{event.subscription_id}:{event.period_start}"


async def _payment_order(
    session: AsyncSession, gateway: PaymentGateway, provider: Provider, payment: PaymentRef
) -> Order | None:
    """Our order paid (or being paid) by this payment: the one it already paid, else the one the event
    names, else the one the provider says made the payment (a refund or dispute can be told before the
    payment's confirmation). None when it is no order's."""
    order = await OrderRepository(session).get_by_provider_payment_id(provider.value, payment.payment_id)
    if order is None:
        order = await orders.find(session, provider, payment.order)
    if order is None:
        origin = await gateway.checkout_of(payment.payment_id)
        if origin is not None:
            order = await orders.find(session, provider, origin)
    return order


async def _refunded(
    session: AsyncSession, gateway: PaymentGateway, provider: Provider, event: Refunded
) -> bool:
    order = await _payment_order(session, gateway, provider, event.payment)
    if order is None:
        return await invoices.refunded(session, gateway, provider, event)
    key = f"{provider.value}_refund:{event.refund_id}"
    payment_id = event.payment.payment_id
    if event.cumulative:
        refunded_total = orders.in_order_units(order, event.amount, event.charged)
        return await orders.refund(session, order, key, payment_id=payment_id, refunded_total=refunded_total)
    return await orders.refund(session, order, key, payment_id=payment_id, increment=event.amount)


async def _disputed(
    session: AsyncSession, gateway: PaymentGateway, provider: Provider, event: Disputed
) -> bool:
    order = await _payment_order(session, gateway, provider, event.payment)
    if order is None:
        return await invoices.disputed(session, gateway, provider, event)
    amount = event.amount
    if event.currency is not None and event.currency.upper() != order.currency.upper():
        amount = None  # not comparable with the order's amount: the whole payment counts as disputed
    dispute = disputes.Dispute(provider, event.dispute_id, amount, event.payment.payment_id)
    return await disputes.apply(session, order, event.effect, dispute)

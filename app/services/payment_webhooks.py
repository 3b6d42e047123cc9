"""Stripe, Razorpay and Dodo webhooks: verified on the raw body, recorded in the inbox, applied once.

Providers promise no order, so a refund or a dispute can be told before the payment it is about. Such an
event is matched to its order through what it carries or what the provider says about its payment
(Razorpay: the payment's `order_id`; Stripe: the charge's metadata, copied from our payment intent, else
the Checkout Session of the payment intent, asked of Stripe; Dodo: the payment, asked of Dodo, with its
checkout and our metadata) and recorded against the order, which applies it when the payment lands (see
app/services/billing.py). A payment confirmation grants the order only when the amount and currency paid
cover its price.

Event ids (Stripe's and Dodo's signed ones, Razorpay's unsigned header) are checked before anything is
stored: an id that is empty, over 255 characters or not printable ASCII answers 400 and changes nothing.

Disputes (chargebacks) of all three are mapped here onto two effects, `billing.chargeback` (credits taken
back, once per dispute) and `billing.chargeback_won` (given back, once); the rules are documented beside
them in app/services/billing.py. A Stripe refund or dispute of a payment that is none of our orders may be
a subscription invoice's: Stripe is asked which invoice that payment intent paid (the event does not say),
and the credits that invoice granted are treated by the same rules (`billing.refund_invoice`,
`billing.chargeback_invoice`); a failing lookup answers 500, so Stripe delivers the event again. An event
about a payment that is neither (another integration's payment) is stored in the inbox and answered
"ignored"."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.errors import BadRequest, ProviderNotConfigured
from app.integrations.dodo_gateway import DodoGateway
from app.integrations.payments import InvalidPaymentSignature, json_object
from app.integrations.stripe_gateway import InvoicePayment, StripeGateway
from app.models import Order, Provider
from app.repositories.billing import OrderRepository
from app.services import billing, webhook_inbox
from app.services.webhook_inbox import Outcome

log = structlog.get_logger("app.payment_webhooks")
ENDED_STRIPE_STATUSES = frozenset({"canceled", "unpaid", "incomplete_expired"})

DisputeEffect = Literal["chargeback", "won"]
STRIPE_DISPUTE_EVENTS = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
    }
)
# Stripe withdraws the disputed money when a (non-inquiry) dispute opens, and it stays out through review,
# appeal and loss. `warning_*` statuses are inquiries (no money moves), `prevented` was settled by a refund
# (charge.refunded takes those credits).
STRIPE_CHARGEBACK_STATUSES = frozenset(
    {"needs_response", "under_review", "lost", "appeal_needs_response", "appeal_under_review"}
)
# Razorpay phases that are questions, not chargebacks: a retrieval asks for details; a fraud-phase dispute
# is closed by details or by a refund (refund.processed takes those credits). Phases after a won
# chargeback re-open it under the same id: each is a dispute of its own for our purposes.
RAZORPAY_INQUIRY_PHASES = frozenset({"retrieval", "fraud"})
RAZORPAY_REOPENED_PHASES = frozenset({"pre_arbitration", "arbitration"})
# Dodo holds the disputed money from `dispute.opened`; accepted, lost (incl. Visa RDR) and expired leave it
# with the cardholder; won and cancelled release it back to us.
DODO_DISPUTE_EFFECTS: dict[str, DisputeEffect] = {
    "dispute.opened": "chargeback",
    "dispute.challenged": "chargeback",
    "dispute.accepted": "chargeback",
    "dispute.lost": "chargeback",
    "dispute.expired": "chargeback",
    "dispute.won": "won",
    "dispute.cancelled": "won",
}


class InvalidWebhookSignature(BadRequest):
    code = "invalid_signature"
    default_detail = "The webhook signature is missing, wrong or too old."


def _verified(provider: Provider, verify: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The provider's event, or a 400 (logged, without the payload) when its signature does not hold."""
    try:
        return verify()
    except InvalidPaymentSignature as exc:
        log.warning("webhook.rejected", provider=provider.value, reason=str(exc))
        raise InvalidWebhookSignature() from exc


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int) else None


async def _order_from_metadata(
    session: AsyncSession, provider: Provider, metadata: dict[str, Any]
) -> Order | None:
    try:
        order_id = uuid.UUID(str(metadata.get("order_id")))
    except ValueError:
        return None
    order = await OrderRepository(session).get(order_id)
    return order if order is not None and order.provider == provider.value else None


def _minor_units(order: Order, amount: Any, currency: Any) -> int | None:
    """A dispute's amount in the order's minor units; None (the whole payment) when it is missing, not a
    positive integer, or in another currency than the order's."""
    if isinstance(currency, str) and currency.upper() != order.currency.upper():
        return None
    return amount if isinstance(amount, int) and not isinstance(amount, bool) and amount > 0 else None


async def _apply_dispute(
    session: AsyncSession,
    order: Order,
    effect: DisputeEffect | None,
    dispute: billing.Dispute,
) -> bool:
    """False (ignored) when the disputed payment is not the one that paid the order."""
    if effect == "chargeback":
        return await billing.chargeback(session, order, dispute)
    if effect == "won":
        return await billing.chargeback_won(session, order, dispute)
    log.info("billing.dispute_without_effect", order_id=str(order.id), dispute_id=dispute.dispute_id)
    return True


# --- Stripe ----------------------------------------------------------------------------------------


async def receive_stripe(
    session: AsyncSession, ctx: Container, body: bytes, headers: Mapping[str, str]
) -> Outcome:
    gateway = ctx.stripe
    if gateway is None or not ctx.settings.stripe_webhook_secret:
        raise ProviderNotConfigured("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET).")
    event = _verified(Provider.stripe, lambda: gateway.verify_event(body, headers.get("stripe-signature")))
    event_id = str(event.get("id") or "")
    event_type = str(event.get("type"))
    data = json_object(json_object(event.get("data")).get("object"))

    async def apply() -> bool:
        return await _apply_stripe(session, gateway, event_type, data)

    return await webhook_inbox.receive(session, Provider.stripe.value, event_id, event_type, event, apply)


async def _apply_stripe(
    session: AsyncSession, gateway: StripeGateway, event_type: str, data: dict[str, Any]
) -> bool:
    if event_type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        order = await _stripe_session_order(session, data)
        if order is None:
            return False
        _record_stripe_tax(order, data)
        if data.get("payment_status") == "paid" or event_type.endswith("async_payment_succeeded"):
            if data.get("mode") == "subscription":
                order.provider_subscription_id = (
                    data.get("subscription") if isinstance(data.get("subscription"), str) else None
                )
            amount, currency = _stripe_paid(data)
            await billing.payment_received(
                session,
                order,
                data.get("payment_intent") if isinstance(data.get("payment_intent"), str) else None,
                amount=amount,
                currency=currency,
            )
        return True
    if event_type in ("checkout.session.async_payment_failed", "checkout.session.expired"):
        order = await _stripe_session_order(session, data)
        if order is not None:
            await billing.fail(session, order, event_type)
        return order is not None
    if event_type == "invoice.paid":
        details = json_object(json_object(data.get("parent")).get("subscription_details"))
        subscription_id, metadata = details.get("subscription"), json_object(details.get("metadata"))
        if not isinstance(subscription_id, str) or not metadata.get("user_id") or not metadata.get("plan_id"):
            return False
        period_end = max(
            (
                json_object(line.get("period")).get("end", 0)
                for line in json_object(data.get("lines")).get("data", [])
                if isinstance(line, dict)
            ),
            default=None,
        )
        await billing.subscription_paid(
            session,
            provider=Provider.stripe,
            subscription_id=subscription_id,
            user_id=uuid.UUID(str(metadata["user_id"])),
            plan_ref=str(metadata["plan_id"]),
            period_key=billing.invoice_grant_key(Provider.stripe, str(data["id"])),
            current_period_end=_timestamp(period_end),
        )
        return True
    if event_type in ("customer.subscription.updated", "customer.subscription.deleted"):
        items = json_object(data.get("items")).get("data") or [{}]
        status = str(data.get("status"))
        changed = await billing.subscription_changed(
            session,
            provider=Provider.stripe,
            subscription_id=str(data.get("id")),
            status=status,
            cancel_at_period_end=bool(data.get("cancel_at_period_end")),
            current_period_end=_timestamp(json_object(items[0]).get("current_period_end")),
            ended=event_type.endswith("deleted") or status in ENDED_STRIPE_STATUSES,
            metadata=json_object(data.get("metadata")),
        )
        return changed is not None
    if event_type == "charge.refunded":
        payment_intent = data.get("payment_intent")
        if not isinstance(payment_intent, str):
            return False
        refunded = _positive_int(data.get("amount_refunded")) or 0
        order = await _stripe_payment_order(
            session, gateway, payment_intent, json_object(data.get("metadata"))
        )
        if order is None:
            return await _stripe_invoice_refund(session, gateway, payment_intent, data, refunded)
        return await billing.refund(
            session,
            order,
            f"stripe_refund:{data.get('id')}:{refunded}",
            payment_id=payment_intent,
            refunded_total=_in_order_units(order, refunded, _positive_int(data.get("amount"))),
        )
    if event_type in STRIPE_DISPUTE_EVENTS:
        return await _stripe_dispute(session, gateway, event_type, data)
    return False


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _positive_int(value: Any) -> int | None:
    number = _int(value)
    return number if number is not None and number > 0 else None


def _in_order_units(order: Order, refunded: int, charged: int | None) -> int:
    """A charge's refunded amount as the same part of the order's amount: a charge can be for more than
    the order (tax added on top) or in the customer's currency (Adaptive Pricing)."""
    if charged is None or charged == order.amount:
        return refunded
    return order.amount * min(refunded, charged) // charged


def _stripe_paid(data: dict[str, Any]) -> tuple[int | None, str | None]:
    """What a completed Checkout Session says was paid for its items: (minor units, currency), after
    discounts and before tax (tax is added on top or included, so it never makes up for less money).
    Adaptive Pricing sessions from before API 2025-03-31 give our currency's amounts under
    `currency_conversion`."""
    converted = json_object(data.get("currency_conversion"))
    if isinstance(converted.get("source_currency"), str):
        return _int(converted.get("amount_subtotal")), converted["source_currency"]
    currency = data.get("currency") if isinstance(data.get("currency"), str) else None
    subtotal = _int(data.get("amount_subtotal"))
    if subtotal is None:
        return _int(data.get("amount_total")), currency
    discount = _int(json_object(data.get("total_details")).get("amount_discount")) or 0
    return subtotal - discount, currency


async def _stripe_payment_order(
    session: AsyncSession, gateway: StripeGateway, payment_intent: str, metadata: dict[str, Any]
) -> Order | None:
    """Our order paid (or being paid) by this payment intent: the one it already paid, else the one our
    metadata names (Stripe copies the payment intent's metadata onto its charges), else the one whose
    Checkout Session created the payment intent (asked of Stripe: a refund or dispute can be told before
    `checkout.session.completed`, the event that names the payment intent). None when it is no order's."""
    orders = OrderRepository(session)
    order = await orders.get_by_provider_payment_id(Provider.stripe.value, payment_intent)
    if order is None:
        order = await _order_from_metadata(session, Provider.stripe, metadata)
    if order is None:
        checkout = await gateway.checkout_session_of(payment_intent)
        if checkout is not None:
            order = await _order_from_metadata(session, Provider.stripe, checkout.metadata)
            if order is None:
                order = await orders.get_by_provider_order_id(Provider.stripe.value, checkout.session_id)
    return order


async def _stripe_invoices_paid_by(gateway: StripeGateway, payment_intent: str) -> list[InvoicePayment]:
    """The invoices this payment intent paid (one in practice), asked of Stripe: in API 2026-10-28 neither
    a Charge nor a Dispute names its invoice, and `invoice.paid` does not name its payment intent. A
    PaymentGatewayError propagates, so the inbox answers 500 and Stripe delivers the event again."""
    seen: set[str] = set()
    paid: list[InvoicePayment] = []
    for payment in await gateway.invoice_payments(payment_intent):
        if payment.status != "canceled" and payment.invoice_id not in seen:  # canceled: it never paid
            seen.add(payment.invoice_id)
            paid.append(payment)
    return paid


async def _stripe_invoice_refund(
    session: AsyncSession,
    gateway: StripeGateway,
    payment_intent: str,
    charge: dict[str, Any],
    refunded: int,
) -> bool:
    """`charge.refunded` of a charge that is none of our orders: if its payment intent paid subscription
    invoices we granted credits for, `amount_refunded / amount` of each invoice's credits comes back (a
    payment of several invoices is refunded pro rata). False (ignored) for anything else."""
    amount = charge.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0 or refunded <= 0:
        return False
    handled = False
    for payment in await _stripe_invoices_paid_by(gateway, payment_intent):
        key = f"stripe_refund:{charge.get('id')}:{refunded}:{payment.invoice_id}"
        grant_key = billing.invoice_grant_key(Provider.stripe, payment.invoice_id)
        if await billing.refund_invoice(session, grant_key, key, refunded_total=refunded, paid=amount):
            handled = True
        elif await _bills_our_subscription(session, gateway, payment.invoice_id):
            # Events come in any order: this renewal's invoice.paid is still on its way. Answering 500
            # makes Stripe redeliver the refund, which then finds the grant; ignoring it would lose it.
            raise RenewalNotGrantedYet(f"invoice {payment.invoice_id} is refunded before it was granted")
    return handled


class RenewalNotGrantedYet(Exception):
    """A refund of a renewal whose `invoice.paid` has not been applied yet: retried by redelivery."""


async def _bills_our_subscription(session: AsyncSession, gateway: StripeGateway, invoice_id: str) -> bool:
    """The invoice bills a subscription one of our checkouts opened (its metadata names our order), or
    one we already know."""
    billed = await gateway.invoice_subscription(invoice_id)
    if billed is None:
        return False
    if await _order_from_metadata(session, Provider.stripe, billed.metadata) is not None:
        return True
    return await billing.is_our_subscription(session, Provider.stripe, billed.subscription_id)


def _stripe_dispute_effect(event_type: str, data: dict[str, Any]) -> DisputeEffect | None:
    status = str(data.get("status"))
    if status == "won":
        return "won"
    if status in STRIPE_CHARGEBACK_STATUSES or event_type == "charge.dispute.funds_withdrawn":
        return "chargeback"
    return None


async def _stripe_dispute(
    session: AsyncSession, gateway: StripeGateway, event_type: str, data: dict[str, Any]
) -> bool:
    """`charge.dispute.*`: data.object is the Dispute (`id` du_..., `payment_intent`, `amount`, `currency`,
    `status`). The order is found by its payment intent, else the subscription invoices it paid (asked of
    Stripe); a dispute of anything else (no payment intent, another integration's payment) is ignored.
    Every event is read by the dispute's status (`won` gives back; the open and lost statuses take);
    `funds_withdrawn` takes whatever the status says, while `funds_reinstated` alone is no win (Stripe also
    reinstates the refunded part of a partially refunded payment), so it too goes by the status."""
    payment_intent = data.get("payment_intent")
    if not isinstance(payment_intent, str) or not isinstance(data.get("id"), str):
        return False
    effect = _stripe_dispute_effect(event_type, data)
    order = await _stripe_payment_order(session, gateway, payment_intent, {})
    if order is None:
        return await _stripe_invoice_dispute(session, gateway, payment_intent, effect, data)
    dispute = billing.Dispute(
        Provider.stripe,
        data["id"],
        _minor_units(order, data.get("amount"), data.get("currency")),
        payment_intent,
    )
    return await _apply_dispute(session, order, effect, dispute)


async def _stripe_invoice_dispute(
    session: AsyncSession,
    gateway: StripeGateway,
    payment_intent: str,
    effect: DisputeEffect | None,
    data: dict[str, Any],
) -> bool:
    """A dispute of a payment that is none of our orders: if it paid subscription invoices we granted
    credits for, the disputed share of each invoice's credits is charged back (or given back when won),
    once per dispute and invoice. False (ignored) for anything else."""
    payments = await _stripe_invoices_paid_by(gateway, payment_intent)
    paid = sum(p.amount_paid if p.amount_paid is not None else p.amount_requested for p in payments)
    amount, currency = data.get("amount"), data.get("currency")
    if isinstance(currency, str) and any(p.currency.lower() != currency.lower() for p in payments):
        amount = None  # not comparable with what was paid: the whole payment counts as disputed
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        amount = None
    handled = False
    for payment in payments:
        grant_key = billing.invoice_grant_key(Provider.stripe, payment.invoice_id)
        if not await billing.invoice_granted(session, grant_key):
            continue
        handled = True
        dispute = billing.Dispute(Provider.stripe, f"{data['id']}:{payment.invoice_id}", amount)
        if effect == "chargeback":
            await billing.chargeback_invoice(session, grant_key, dispute, paid=paid)
        elif effect == "won":
            await billing.chargeback_invoice_won(session, grant_key, dispute, paid=paid)
        else:
            log.info("billing.dispute_without_effect", grant=grant_key, dispute_id=dispute.dispute_id)
    return handled


async def _stripe_session_order(session: AsyncSession, data: dict[str, Any]) -> Order | None:
    order = await _order_from_metadata(session, Provider.stripe, json_object(data.get("metadata")))
    if order is None and isinstance(data.get("id"), str):
        order = await OrderRepository(session).get_by_provider_order_id(Provider.stripe.value, data["id"])
    return order


def _record_stripe_tax(order: Order, data: dict[str, Any]) -> None:
    details = json_object(data.get("customer_details"))
    country = json_object(details.get("address")).get("country")
    if isinstance(country, str):
        order.billing_country = country[:2]
    tax_ids = details.get("tax_ids")
    if isinstance(tax_ids, list) and tax_ids:
        order.customer_tax_ids = [
            {"type": item.get("type"), "value": item.get("value")}
            for item in tax_ids
            if isinstance(item, dict)
        ]
    tax = json_object(data.get("total_details")).get("amount_tax")
    if isinstance(tax, int):
        order.tax_amount = tax


# --- Razorpay --------------------------------------------------------------------------------------


async def receive_razorpay(
    session: AsyncSession, ctx: Container, body: bytes, headers: Mapping[str, str]
) -> Outcome:
    gateway = ctx.razorpay
    if gateway is None or not ctx.settings.razorpay_webhook_secret:
        raise ProviderNotConfigured("Razorpay webhooks are not configured (RAZORPAY_WEBHOOK_SECRET).")
    event = _verified(
        Provider.razorpay, lambda: gateway.verify_event(body, headers.get("x-razorpay-signature"))
    )
    event_type = str(event.get("event"))
    payload = json_object(event.get("payload"))
    payment = json_object(json_object(payload.get("payment")).get("entity"))
    header_id = headers.get("x-razorpay-event-id")
    if header_id is not None:
        # Unsigned: anyone who can replay a signed body can send any header with it. Bounded and checked.
        event_id = header_id
    else:
        # No header: the event's own (signed) content identifies it, digested when it is too long.
        entity_id = payment.get("id") or json_object(json_object(payload.get("dispute")).get("entity")).get(
            "id"
        )
        event_id = f"{event_type}:{entity_id}:{event.get('created_at')}"
        if not webhook_inbox.is_valid_event_id(event_id):
            event_id = "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()

    async def apply() -> bool:
        return await _apply_razorpay(session, event_type, payload, payment)

    return await webhook_inbox.receive(session, Provider.razorpay.value, event_id, event_type, event, apply)


async def _apply_razorpay(
    session: AsyncSession, event_type: str, payload: dict[str, Any], payment: dict[str, Any]
) -> bool:
    if event_type in ("payment.captured", "order.paid", "payment.failed"):
        order_id = payment.get("order_id") or json_object(
            json_object(payload.get("order")).get("entity")
        ).get("id")
        order = (
            await OrderRepository(session).get_by_provider_order_id(Provider.razorpay.value, str(order_id))
            if order_id
            else None
        )
        if order is None:
            return False
        payment_id = str(payment["id"]) if payment.get("id") else None
        if event_type == "payment.failed":
            await billing.fail(session, order, str(payment.get("error_description") or "payment failed"))
        else:
            amount, currency = _int(payment.get("amount")), payment.get("currency")
            await billing.payment_received(
                session,
                order,
                payment_id,
                amount=amount,
                currency=currency if isinstance(currency, str) else None,
            )
        return True
    if event_type == "refund.processed":
        refund = json_object(json_object(payload.get("refund")).get("entity"))
        payment_id = refund.get("payment_id") or payment.get("id")
        order = await _razorpay_payment_order(session, payment_id, payment)
        if order is None or not refund.get("id"):
            return False
        return await billing.refund(
            session,
            order,
            f"razorpay_refund:{refund['id']}",
            payment_id=str(payment_id),
            increment=_positive_int(refund.get("amount")) or 0,
        )
    if event_type.startswith("payment.dispute."):
        return await _razorpay_dispute(session, event_type, payload, payment)
    return False


async def _razorpay_payment_order(
    session: AsyncSession, payment_id: Any, payment: dict[str, Any]
) -> Order | None:
    """Our order paid (or being paid) by this payment: the one it already paid, else the Razorpay order
    the payment entity names (a refund or dispute can be told before `payment.captured`)."""
    if not isinstance(payment_id, str) or not payment_id:
        return None
    orders = OrderRepository(session)
    order = await orders.get_by_provider_payment_id(Provider.razorpay.value, payment_id)
    order_id = payment.get("order_id")
    if order is None and payment.get("id") == payment_id and isinstance(order_id, str) and order_id:
        order = await orders.get_by_provider_order_id(Provider.razorpay.value, order_id)
    return order


async def _razorpay_dispute(
    session: AsyncSession, event_type: str, payload: dict[str, Any], payment: dict[str, Any]
) -> bool:
    """`payment.dispute.{created,under_review,action_required,lost,won,closed}`: payload.dispute.entity is
    the Dispute (`id` disp_..., `payment_id`, `amount`, `currency`, `phase`, `status`).

    Razorpay deducts the money only when a dispute is lost, but a chargeback is taken from the credits as
    soon as it opens (the customer has asked the bank for the money back; won gives it back). `closed` only
    ends fraud-phase disputes, which take nothing, so it changes nothing."""
    dispute = json_object(json_object(payload.get("dispute")).get("entity"))
    payment_id = dispute.get("payment_id") or payment.get("id")
    order = await _razorpay_payment_order(session, payment_id, payment)
    if order is None or not dispute.get("id"):
        return False
    phase, action = str(dispute.get("phase")), event_type.removeprefix("payment.dispute.")
    effect: DisputeEffect | None = None
    if action == "lost":
        effect = "chargeback"
    elif phase in RAZORPAY_INQUIRY_PHASES:
        effect = None  # nothing was taken for a question, so nothing is given back either
    elif action == "won":
        effect = "won"
    elif action in ("created", "under_review", "action_required"):
        effect = "chargeback"
    dispute_id = str(dispute["id"]) + (f":{phase}" if phase in RAZORPAY_REOPENED_PHASES else "")
    amount = _minor_units(order, dispute.get("amount"), dispute.get("currency"))
    return await _apply_dispute(
        session, order, effect, billing.Dispute(Provider.razorpay, dispute_id, amount, str(payment_id))
    )


# --- Dodo ------------------------------------------------------------------------------------------


async def receive_dodo(
    session: AsyncSession, ctx: Container, body: bytes, headers: Mapping[str, str]
) -> Outcome:
    gateway = ctx.dodo
    if gateway is None or not ctx.settings.dodo_webhook_secret:
        raise ProviderNotConfigured("Dodo Payments webhooks are not configured (DODO_WEBHOOK_SECRET).")
    event = _verified(Provider.dodo, lambda: gateway.verify_event(body, headers))
    event_id = headers.get("webhook-id") or ""
    event_type = str(event.get("type"))
    data = json_object(event.get("data"))

    async def apply() -> bool:
        return await _apply_dodo(session, gateway, event_type, data)

    return await webhook_inbox.receive(session, Provider.dodo.value, event_id, event_type, event, apply)


async def _dodo_checkout_order(
    session: AsyncSession, metadata: dict[str, Any], checkout_session_id: Any
) -> Order | None:
    order = await _order_from_metadata(session, Provider.dodo, metadata)
    if order is None and isinstance(checkout_session_id, str):
        order = await OrderRepository(session).get_by_provider_order_id(
            Provider.dodo.value, checkout_session_id
        )
    return order


async def _dodo_payment_order(session: AsyncSession, gateway: DodoGateway, payment_id: Any) -> Order | None:
    """Our order paid (or being paid) by this payment: the one it already paid, else the one Dodo's record
    of the payment names (our metadata, its checkout session), asked of Dodo: a refund or dispute can be
    told before `payment.succeeded`, and neither carries the payment's metadata. A failing lookup raises
    PaymentGatewayError (500: Dodo delivers the event again)."""
    if not isinstance(payment_id, str) or not payment_id:
        return None
    order = await OrderRepository(session).get_by_provider_payment_id(Provider.dodo.value, payment_id)
    if order is None:
        found = await gateway.payment(payment_id)
        if found is not None:
            order = await _dodo_checkout_order(session, found.metadata, found.checkout_session_id)
    return order


async def _apply_dodo(
    session: AsyncSession, gateway: DodoGateway, event_type: str, data: dict[str, Any]
) -> bool:
    metadata = json_object(data.get("metadata"))
    if event_type in ("payment.succeeded", "payment.failed", "payment.cancelled"):
        order = await _dodo_checkout_order(session, metadata, data.get("checkout_session_id"))
        if order is None:
            return False
        if event_type == "payment.succeeded":
            currency = data.get("currency")
            await billing.payment_received(
                session,
                order,
                str(data.get("payment_id")),
                amount=_int(data.get("total_amount")),
                currency=currency if isinstance(currency, str) else None,
            )
        else:
            await billing.fail(session, order, str(data.get("error_message") or event_type))
        return True
    if event_type == "refund.succeeded":
        payment_id, refund_id = data.get("payment_id"), data.get("refund_id")
        if not isinstance(refund_id, str) or not refund_id:
            return False
        order = await _dodo_payment_order(session, gateway, payment_id)
        if order is None:
            return False
        return await billing.refund(
            session,
            order,
            f"dodo_refund:{refund_id}",
            payment_id=str(payment_id),
            increment=_positive_int(data.get("amount")) or 0,
        )
    if event_type.startswith("dispute."):
        return await _dodo_dispute(session, gateway, event_type, data)
    if event_type in ("subscription.active", "subscription.renewed"):
        if not metadata.get("user_id") or not metadata.get("plan_id"):
            return False
        await billing.subscription_paid(
            session,
            provider=Provider.dodo,
            subscription_id=str(data.get("subscription_id")),
            user_id=uuid.UUID(str(metadata["user_id"])),
            plan_ref=str(metadata["plan_id"]),
            period_key=f"dodo_subscription:{data.get('subscription_id')}:{data.get('previous_billing_date')}",
        )
        return True
    if event_type in (
        "subscription.cancelled",
        "subscription.expired",
        "subscription.failed",
        "subscription.on_hold",
    ):
        changed = await billing.subscription_changed(
            session,
            provider=Provider.dodo,
            subscription_id=str(data.get("subscription_id")),
            status=event_type.split(".", 1)[1],
            ended=event_type != "subscription.on_hold",
            metadata=metadata,
        )
        return changed is not None
    return False


async def _dodo_dispute(
    session: AsyncSession, gateway: DodoGateway, event_type: str, data: dict[str, Any]
) -> bool:
    """`dispute.*`: data is the Dispute (`dispute_id`, `payment_id`, `amount` as a string, `currency`,
    `dispute_stage` pre_dispute|dispute|pre_arbitration, `dispute_status`). A pre-arbitration re-opens a
    dispute we won, under the same id: it is a dispute of its own for our purposes.

    Dodo documents no unit for the string `amount` (minor units? "10.00"?), and reading it wrong would
    take back too little, silently: the whole payment counts as disputed (what is still unrefunded of it,
    since shares are cumulative with refunds), as card disputes are in practice."""
    payment_id, dispute_id = data.get("payment_id"), data.get("dispute_id")
    if not isinstance(dispute_id, str) or not dispute_id:
        return False
    order = await _dodo_payment_order(session, gateway, payment_id)
    if order is None:
        return False
    stage = data.get("dispute_stage")
    if stage == "pre_arbitration":
        dispute_id = f"{dispute_id}:{stage}"
    dispute = billing.Dispute(Provider.dodo, dispute_id, None, str(payment_id))
    return await _apply_dispute(session, order, DODO_DISPUTE_EFFECTS.get(event_type), dispute)

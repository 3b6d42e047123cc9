"""Stripe through its SDK (async over httpx): Checkout Sessions, the lookups refunds and disputes need (the
session behind a payment intent, the invoices a payment paid), and signed webhook events read into
`PaymentEvent`s.

Event ids are the signed body's `id`. Disputes are read by their status: `won` gives back; the open and
lost statuses take (Stripe withdraws the disputed money when a non-inquiry dispute opens, and it stays out
through review, appeal and loss); `funds_withdrawn` takes whatever the status says, while
`funds_reinstated` alone is no win (Stripe also reinstates the refunded part of a partially refunded
payment), so it too goes by the status. `warning_*` statuses are inquiries (no money moves), `prevented`
was settled by a refund (charge.refunded takes those credits)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import stripe
from stripe.params import InvoicePaymentListParams

from app.integrations.payments.base import (
    Checkout,
    CheckoutPaid,
    CheckoutPending,
    CheckoutRequest,
    Disputed,
    DisputeEffect,
    InvalidSignature,
    InvoicePayment,
    InvoiceSubscription,
    OrderRef,
    PaymentEvent,
    PaymentFailed,
    PaymentGatewayError,
    PaymentRef,
    Refunded,
    SubscriptionChanged,
    SubscriptionPaid,
    TaxDetails,
    TaxId,
    Unhandled,
    integer,
    json_object,
    lower_keys,
    order_id_in,
    positive,
    subscriber_in,
    text,
)

WEBHOOK_TOLERANCE_SECONDS = 300
# Invoice payments of one payment intent: one page holds them all in practice; the bound only stops a
# misbehaving API from paging forever.
INVOICE_PAYMENTS_PAGE_SIZE = 100
INVOICE_PAYMENTS_MAX_PAGES = 10

PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
FAILED_EVENTS = frozenset({"checkout.session.async_payment_failed", "checkout.session.expired"})
SUBSCRIPTION_EVENTS = frozenset({"customer.subscription.updated", "customer.subscription.deleted"})
ENDED_STATUSES = frozenset({"canceled", "unpaid", "incomplete_expired"})
DISPUTE_EVENTS = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
    }
)
CHARGEBACK_STATUSES = frozenset(
    {"needs_response", "under_review", "lost", "appeal_needs_response", "appeal_under_review"}
)


class StripeGateway:
    client_key: str | None = None

    def __init__(
        self,
        *,
        secret_key: str,
        webhook_secret: str | None,
        api_base: str,
        automatic_tax: bool,
        tax_id_collection: bool,
        max_retries: int = 2,
        timeout_seconds: float = 20.0,
    ) -> None:
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base},
            max_network_retries=max_retries,
            http_client=self._http,
        )
        self._webhook_secret = webhook_secret
        self._automatic_tax = automatic_tax
        self._tax_id_collection = tax_id_collection

    @property
    def webhooks_enabled(self) -> bool:
        return bool(self._webhook_secret)

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        price_data: dict[str, Any] = {
            "currency": request.currency.lower(),
            "unit_amount": request.amount,
            "product_data": {"name": request.product_name},
        }
        params: dict[str, Any] = {
            "mode": "subscription" if request.recurring_interval else "payment",
            "line_items": [{"price_data": price_data, "quantity": 1}],
            "client_reference_id": str(request.order_id),
            "metadata": request.metadata,
            "success_url": request.success_url + "?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": request.cancel_url,
        }
        if request.recurring_interval:
            price_data["recurring"] = {"interval": request.recurring_interval}
            # Invoices of the subscription carry these, so renewals find their user.
            params["subscription_data"] = {"metadata": request.metadata}
        else:
            params["payment_intent_data"] = {"metadata": request.metadata}
            params["customer_creation"] = "always"
        if request.customer_email:
            params["customer_email"] = request.customer_email
        if self._automatic_tax:
            params["automatic_tax"] = {"enabled": True}
            # Our price is before tax and Stripe adds the tax on top: the tax invoice reads net = our
            # price, VAT = the session's `total_details.amount_tax` (tax_invoices.py).
            price_data["tax_behavior"] = "exclusive"
        if self._tax_id_collection:
            params["tax_id_collection"] = {"enabled": True}
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        if not session.url:
            raise PaymentGatewayError("Stripe returned a session without a URL.", retryable=False)
        return Checkout(session.id, session.url)

    def verify_client_payment(self, checkout_id: str, payment_id: str, signature: str) -> None:
        raise InvalidSignature("Stripe confirms payments by webhook only")

    async def invoices_paid_by(self, payment_id: str) -> list[InvoicePayment]:
        """Stripe's Invoice Payments API:
        `GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=<pi>` (every page).
        In API 2026-10-28 neither a Charge nor a Dispute names its invoice, and `invoice.paid` does not name
        its payment intent."""
        params: InvoicePaymentListParams = {
            "payment": {"type": "payment_intent", "payment_intent": payment_id},
            "limit": INVOICE_PAYMENTS_PAGE_SIZE,
        }
        found: list[InvoicePayment] = []
        try:
            for _ in range(INVOICE_PAYMENTS_MAX_PAGES):
                page = await self._client.v1.invoice_payments.list_async(params=params)
                for item in page.data:
                    payment = _invoice_payment(item.to_dict())
                    if payment is not None:
                        found.append(payment)
                if not page.has_more or not page.data:
                    return found
                params["starting_after"] = page.data[-1].id
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        raise PaymentGatewayError(
            "Stripe: too many invoice payments for one payment intent.", retryable=False
        )

    async def checkout_of(self, payment_id: str) -> OrderRef | None:
        """The Checkout Session that created this payment intent
        (`GET /v1/checkout/sessions?payment_intent=`), which `checkout.session.completed` names."""
        try:
            page = await self._client.v1.checkout.sessions.list_async(
                params={"payment_intent": payment_id, "limit": 1}
            )
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        for found in page.data:
            fields = found.to_dict()
            if isinstance(fields.get("id"), str):
                return OrderRef(order_id_in(json_object(fields.get("metadata"))), fields["id"])
        return None

    async def invoice_subscription(self, invoice_id: str) -> InvoiceSubscription | None:
        """From the invoice's `parent.subscription_details` (API 2025-03-31 and later), with the metadata
        our checkout gave the subscription."""
        try:
            invoice = (await self._client.v1.invoices.retrieve_async(invoice_id)).to_dict()
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise _gateway_error(exc) from exc
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        details = json_object(json_object(invoice.get("parent")).get("subscription_details"))
        subscription = details.get("subscription")
        if isinstance(subscription, dict):  # expanded
            subscription = subscription.get("id")
        if not isinstance(subscription, str) or not subscription:
            return None
        return InvoiceSubscription(subscription, order_id_in(json_object(details.get("metadata"))))

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    def read_event(self, payload: dict[str, Any]) -> PaymentEvent:
        return _event(payload)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> tuple[str, PaymentEvent]:
        """Stripe-Signature over the raw body, no older than 5 minutes; the event id is the body's."""
        if not self._webhook_secret:
            raise InvalidSignature("no webhook secret")
        signature = lower_keys(headers).get("stripe-signature")
        if signature is None or not signature.isascii():
            # The SDK's constant-time compare raises TypeError on non-ASCII text.
            raise InvalidSignature("missing or non-ASCII Stripe-Signature")
        try:
            stripe.Webhook.construct_event(
                body, signature, self._webhook_secret, tolerance=WEBHOOK_TOLERANCE_SECONDS
            )
            event = json.loads(body)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise InvalidSignature(str(exc)) from exc
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise InvalidSignature("not an event")
        return event["id"], _event(event)


def _event(event: dict[str, Any]) -> PaymentEvent:
    event_type = str(event.get("type"))
    told: dict[str, Any] = {"type": event_type, "payload": event}
    data = json_object(json_object(event.get("data")).get("object"))
    if event_type in PAID_EVENTS or event_type in FAILED_EVENTS:
        return _checkout_event(event_type, data, told)
    if event_type == "invoice.paid":
        return _invoice_paid(data, told)
    if event_type in SUBSCRIPTION_EVENTS:
        items = json_object(data.get("items")).get("data")
        item = json_object(items[0]) if isinstance(items, list) and items else {}
        status = str(data.get("status"))
        return SubscriptionChanged(
            subscription_id=str(data.get("id")),
            status=status,
            ended=event_type == "customer.subscription.deleted" or status in ENDED_STATUSES,
            cancel_at_period_end=bool(data.get("cancel_at_period_end")),
            current_period_end=_timestamp(item.get("current_period_end")),
            subscriber=subscriber_in(json_object(data.get("metadata"))),
            **told,
        )
    if event_type == "charge.refunded" or event_type in DISPUTE_EVENTS:
        return _charge_event(event_type, data, told)
    return Unhandled(**told)


def _checkout_event(event_type: str, session: dict[str, Any], told: dict[str, Any]) -> PaymentEvent:
    """A Checkout Session completed (paid, or its payment still on its way), paid later, failed or
    expired."""
    order = _session_order(session)
    if event_type in FAILED_EVENTS:
        return PaymentFailed(order=order, reason=event_type, **told)
    tax = _tax(session)
    if session.get("payment_status") != "paid" and event_type == "checkout.session.completed":
        return CheckoutPending(order=order, tax=tax, **told)
    amount, currency = _paid(session)
    subscription = session.get("subscription") if session.get("mode") == "subscription" else None
    return CheckoutPaid(
        order=order,
        payment_id=text(session.get("payment_intent")),
        amount=amount,
        currency=currency,
        subscription_id=text(subscription),
        tax=tax,
        **told,
    )


def _charge_event(event_type: str, data: dict[str, Any], told: dict[str, Any]) -> PaymentEvent:
    """`charge.refunded` (data is the Charge) or `charge.dispute.*` (the Dispute), of a payment intent."""
    payment_intent = text(data.get("payment_intent"))
    if payment_intent is None:
        return Unhandled(**told)
    if event_type == "charge.refunded":
        # The charge's metadata is our payment intent's, copied by Stripe: it names our order.
        refunded = positive(data.get("amount_refunded")) or 0
        return Refunded(
            payment=PaymentRef(payment_intent, OrderRef(order_id_in(json_object(data.get("metadata"))))),
            refund_id=f"{data.get('id')}:{refunded}",  # one per refund state of the charge
            amount=refunded,
            cumulative=True,
            charged=positive(data.get("amount")),
            **told,
        )
    dispute_id = text(data.get("id"))
    if dispute_id is None:
        return Unhandled(**told)
    currency = data.get("currency")
    return Disputed(
        payment=PaymentRef(payment_intent),
        dispute_id=dispute_id,
        effect=_dispute_effect(event_type, str(data.get("status"))),
        amount=positive(data.get("amount")),
        currency=currency if isinstance(currency, str) else None,
        **told,
    )


def _dispute_effect(event_type: str, status: str) -> DisputeEffect | None:
    if status == "won":
        return "won"
    if status in CHARGEBACK_STATUSES or event_type == "charge.dispute.funds_withdrawn":
        return "chargeback"
    return None


def _session_order(session: dict[str, Any]) -> OrderRef:
    session_id = session.get("id")
    return OrderRef(
        order_id_in(json_object(session.get("metadata"))), session_id if isinstance(session_id, str) else None
    )


def _paid(session: dict[str, Any]) -> tuple[int | None, str | None]:
    """What a completed Checkout Session says was paid for its items: (minor units, currency), after
    discounts and before tax (tax is added on top or included, so it never makes up for less money).
    Adaptive Pricing sessions from before API 2025-03-31 give our currency's amounts under
    `currency_conversion`."""
    converted = json_object(session.get("currency_conversion"))
    if isinstance(converted.get("source_currency"), str):
        return integer(converted.get("amount_subtotal")), converted["source_currency"]
    currency = session.get("currency") if isinstance(session.get("currency"), str) else None
    subtotal = integer(session.get("amount_subtotal"))
    if subtotal is None:
        return integer(session.get("amount_total")), currency
    discount = integer(json_object(session.get("total_details")).get("amount_discount")) or 0
    return subtotal - discount, currency


def _tax(session: dict[str, Any]) -> TaxDetails:
    details = json_object(session.get("customer_details"))
    country = json_object(details.get("address")).get("country")
    tax_ids = details.get("tax_ids")
    return TaxDetails(
        country=country[:2] if isinstance(country, str) else None,
        tax_ids=tuple(
            TaxId(_string(item.get("type")), _string(item.get("value")))
            for item in (tax_ids if isinstance(tax_ids, list) else [])
            if isinstance(item, dict)
        ),
        # Only Stripe Tax's own figure: without it `amount_tax` is 0 as well, which says nothing.
        tax_amount=integer(json_object(session.get("total_details")).get("amount_tax"))
        if json_object(session.get("automatic_tax")).get("enabled") is True
        else None,
    )


def _invoice_paid(invoice: dict[str, Any], told: dict[str, Any]) -> PaymentEvent:
    """A subscription's invoice paid: the subscription is at `parent.subscription_details`, with the
    metadata our checkout gave it; the period ends with its latest line."""
    details = json_object(json_object(invoice.get("parent")).get("subscription_details"))
    subscription_id, invoice_id = text(details.get("subscription")), text(invoice.get("id"))
    subscriber = subscriber_in(json_object(details.get("metadata")))
    if subscription_id is None or invoice_id is None or subscriber is None:
        return Unhandled(**told)
    lines = json_object(invoice.get("lines")).get("data")
    ends = [
        json_object(line.get("period")).get("end", 0)
        for line in (lines if isinstance(lines, list) else [])
        if isinstance(line, dict)
    ]
    return SubscriptionPaid(
        subscription_id=subscription_id,
        subscriber=subscriber,
        invoice_id=invoice_id,
        current_period_end=_timestamp(max((end for end in ends if integer(end) is not None), default=None)),
        **told,
    )


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if integer(value) is not None else None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _invoice_payment(fields: dict[str, Any]) -> InvoicePayment | None:
    invoice = fields.get("invoice")
    invoice_id = invoice.get("id") if isinstance(invoice, dict) else invoice  # expanded or an id
    if not isinstance(invoice_id, str):
        return None
    paid, requested = fields.get("amount_paid"), fields.get("amount_requested")
    return InvoicePayment(
        invoice_id=invoice_id,
        status=str(fields.get("status")),
        amount_paid=paid if isinstance(paid, int) else None,
        amount_requested=requested if isinstance(requested, int) else 0,
        currency=str(fields.get("currency") or ""),
    )


def _gateway_error(exc: stripe.StripeError) -> PaymentGatewayError:
    status = exc.http_status or 0
    retryable = isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or status >= 500
    return PaymentGatewayError(f"Stripe: {exc.user_message or type(exc).__name__}", retryable=retryable)

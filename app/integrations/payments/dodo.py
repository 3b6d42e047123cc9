"""Dodo Payments through its SDK (async, httpx): checkouts, payment lookups, and webhooks verified as
Standard Webhooks, read into `PaymentEvent`s.

Event ids are the signed `webhook-id` header. A refund or a dispute names only its payment: which checkout
made it is asked of Dodo (`checkout_of`). Disputes: Dodo holds the disputed money from `dispute.opened`;
accepted, lost (incl. Visa RDR) and expired leave it with the cardholder; won and cancelled release it back
to us. A pre-arbitration re-opens a dispute we won, under the same id: it is a dispute of its own. Dodo
documents no unit for a dispute's string `amount` (minor units? "10.00"?), and reading it wrong would take
back too little, silently: the whole payment counts as disputed, as card disputes are in practice."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import dodopayments
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.integrations.payments.base import (
    Checkout,
    CheckoutPaid,
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
    Unhandled,
    integer,
    json_object,
    lower_keys,
    order_id_in,
    positive,
    subscriber_in,
    text,
)

PAYMENT_EVENTS = frozenset({"payment.succeeded", "payment.failed", "payment.cancelled"})
PAID_SUBSCRIPTION_EVENTS = frozenset({"subscription.active", "subscription.renewed"})
CHANGED_SUBSCRIPTION_EVENTS = frozenset(
    {"subscription.cancelled", "subscription.expired", "subscription.failed", "subscription.on_hold"}
)
DISPUTE_EFFECTS: dict[str, DisputeEffect] = {
    "dispute.opened": "chargeback",
    "dispute.challenged": "chargeback",
    "dispute.accepted": "chargeback",
    "dispute.lost": "chargeback",
    "dispute.expired": "chargeback",
    "dispute.won": "won",
    "dispute.cancelled": "won",
}
# Dodo documents no idempotency header; the SDK sends none of its own, so the common one is sent.
IDEMPOTENCY_HEADER = "Idempotency-Key"
_UNAVAILABLE = (
    dodopayments.APIConnectionError,
    dodopayments.RateLimitError,
    dodopayments.InternalServerError,
)


class DodoGateway:
    client_key: str | None = None

    def __init__(
        self, *, api_key: str, webhook_secret: str | None, base_url: str, max_retries: int = 2
    ) -> None:
        self._client = dodopayments.AsyncDodoPayments(
            bearer_token=api_key, base_url=base_url, max_retries=max_retries
        )
        self._webhook_secret = webhook_secret

    @property
    def webhooks_enabled(self) -> bool:
        return bool(self._webhook_secret)

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """A checkout session (`POST /checkouts`) of one product: priced by Dodo, or at `amount` for a
        pay-what-you-want product."""
        if request.product_id is None:
            raise PaymentGatewayError(
                "Dodo Payments sells products; the checkout names none.", retryable=False
            )
        item: dict[str, Any] = {"product_id": request.product_id, "quantity": 1}
        if not request.product_priced:
            item["amount"] = request.amount
        options: dict[str, Any] = {}
        if request.customer_email:
            options["customer"] = {"email": request.customer_email}
        try:
            session = await self._client.checkout_sessions.create(
                product_cart=[item],  # type: ignore[list-item]
                metadata=dict(request.metadata),
                return_url=request.success_url,
                cancel_url=request.cancel_url,
                extra_headers={IDEMPOTENCY_HEADER: request.idempotency_key},
                **options,
            )
        except _UNAVAILABLE as exc:
            raise PaymentGatewayError(
                f"Dodo Payments is unavailable: {type(exc).__name__}", retryable=True
            ) from exc
        except dodopayments.APIError as exc:
            raise PaymentGatewayError(
                f"Dodo Payments refused the checkout: {exc.message}", retryable=False
            ) from exc
        if not session.checkout_url:
            raise PaymentGatewayError("Dodo Payments returned no checkout URL.", retryable=False)
        return Checkout(session.session_id, session.checkout_url)

    def verify_client_payment(self, checkout_id: str, payment_id: str, signature: str) -> None:
        raise InvalidSignature("Dodo Payments confirms payments by webhook only")

    async def checkout_of(self, payment_id: str) -> OrderRef | None:
        """The payment as Dodo has it now (`GET /payments/{id}`): its checkout session and our metadata.
        Neither a refund nor a dispute carries them."""
        try:
            found = await self._client.payments.retrieve(payment_id)
        except dodopayments.NotFoundError:
            return None
        except _UNAVAILABLE as exc:
            raise PaymentGatewayError(
                f"Dodo Payments is unavailable: {type(exc).__name__}", retryable=True
            ) from exc
        except dodopayments.APIError as exc:
            raise PaymentGatewayError(
                f"Dodo Payments refused the payment lookup: {exc.message}", retryable=False
            ) from exc
        fields = found.to_dict()
        return OrderRef(
            order_id_in(json_object(fields.get("metadata"))), text(fields.get("checkout_session_id"))
        )

    async def invoices_paid_by(self, payment_id: str) -> list[InvoicePayment]:
        return []  # Dodo's renewals are told as subscription events, not invoices

    async def invoice_subscription(self, invoice_id: str) -> InvoiceSubscription | None:
        return None

    async def aclose(self) -> None:
        await self._client.close()

    def read_event(self, payload: dict[str, Any]) -> PaymentEvent:
        return _event(payload)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> tuple[str, PaymentEvent]:
        """Standard Webhooks: webhook-id/-timestamp/-signature on the raw body, 5 minutes either way."""
        if not self._webhook_secret:
            raise InvalidSignature("no webhook secret")
        headers = lower_keys(headers)
        try:
            Webhook(self._webhook_secret).verify(body, headers)
            event = json.loads(body)
        except (WebhookVerificationError, ValueError) as exc:
            raise InvalidSignature(str(exc)) from exc
        if not isinstance(event, dict):
            raise InvalidSignature("not an event")
        return headers.get("webhook-id") or "", _event(event)


def _event(event: dict[str, Any]) -> PaymentEvent:
    event_type = str(event.get("type"))
    told: dict[str, Any] = {"type": event_type, "payload": event}
    data = json_object(event.get("data"))
    if event_type in PAYMENT_EVENTS:
        return _payment_event(event_type, data, told)
    if event_type == "refund.succeeded" or event_type.startswith("dispute."):
        return _refund_or_dispute(event_type, data, told)
    if event_type in PAID_SUBSCRIPTION_EVENTS or event_type in CHANGED_SUBSCRIPTION_EVENTS:
        return _subscription_event(event_type, data, told)
    return Unhandled(**told)


def _payment_event(event_type: str, payment: dict[str, Any], told: dict[str, Any]) -> PaymentEvent:
    metadata = json_object(payment.get("metadata"))
    order = OrderRef(order_id_in(metadata), text(payment.get("checkout_session_id")))
    if event_type != "payment.succeeded":
        return PaymentFailed(order=order, reason=str(payment.get("error_message") or event_type), **told)
    currency = payment.get("currency")
    return CheckoutPaid(
        order=order,
        payment_id=text(payment.get("payment_id")),
        amount=integer(payment.get("total_amount")),
        currency=currency if isinstance(currency, str) else None,
        **told,
    )


def _refund_or_dispute(event_type: str, data: dict[str, Any], told: dict[str, Any]) -> PaymentEvent:
    """`refund.succeeded` (data is the Refund) or `dispute.*` (the Dispute: `dispute_id`, `payment_id`,
    `amount` as a string, `currency`, `dispute_stage` pre_dispute|dispute|pre_arbitration,
    `dispute_status`)."""
    payment_id = text(data.get("payment_id"))
    own_id = text(data.get("refund_id" if event_type == "refund.succeeded" else "dispute_id"))
    if payment_id is None or own_id is None:
        return Unhandled(**told)
    if event_type == "refund.succeeded":
        amount = positive(data.get("amount")) or 0
        return Refunded(payment=PaymentRef(payment_id), refund_id=own_id, amount=amount, **told)
    if data.get("dispute_stage") == "pre_arbitration":
        own_id += ":pre_arbitration"
    effect = DISPUTE_EFFECTS.get(event_type)
    return Disputed(payment=PaymentRef(payment_id), dispute_id=own_id, effect=effect, **told)


def _subscription_event(event_type: str, subscription: dict[str, Any], told: dict[str, Any]) -> PaymentEvent:
    subscription_id = str(subscription.get("subscription_id"))
    subscriber = subscriber_in(json_object(subscription.get("metadata")))
    if event_type in CHANGED_SUBSCRIPTION_EVENTS:
        return SubscriptionChanged(
            subscription_id=subscription_id,
            status=event_type.removeprefix("subscription."),
            ended=event_type != "subscription.on_hold",
            subscriber=subscriber,
            **told,
        )
    if subscriber is None:
        return Unhandled(**told)
    period_start = subscription.get("previous_billing_date")
    return SubscriptionPaid(
        subscription_id=subscription_id,
        subscriber=subscriber,
        period_start=None if period_start is None else str(period_start),
        **told,
    )

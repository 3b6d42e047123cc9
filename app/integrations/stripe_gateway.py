"""Stripe through its SDK (async over httpx): Checkout Sessions (and the one behind a payment intent), the
invoices a payment paid, and signed webhook events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import stripe
from stripe.params import InvoicePaymentListParams

from app.integrations.payments import (
    CheckoutRequest,
    HostedCheckout,
    InvalidPaymentSignature,
    PaymentGatewayError,
)

WEBHOOK_TOLERANCE_SECONDS = 300
# Invoice payments of one payment intent: one page holds them all in practice; the bound only stops a
# misbehaving API from paging forever.
INVOICE_PAYMENTS_PAGE_SIZE = 100
INVOICE_PAYMENTS_MAX_PAGES = 10


@dataclass(frozen=True)
class InvoicePayment:
    """A payment made against an invoice (Stripe's `invoice_payment` object), in our own terms.

    `status` is open|paid|canceled; `amount_paid` (minor units of `currency`) is None until it is paid."""

    invoice_id: str
    status: str
    amount_paid: int | None
    amount_requested: int
    currency: str


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


@dataclass(frozen=True)
class InvoiceSubscription:
    subscription_id: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class CheckoutSessionRef:
    session_id: str
    metadata: dict[str, Any]


class StripeGateway:
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

    async def create_checkout(self, request: CheckoutRequest, *, idempotency_key: str) -> HostedCheckout:
        price_data: dict[str, Any] = {
            "currency": request.currency.lower(),
            "unit_amount": request.amount,
            "product_data": {"name": request.product_name},
        }
        params: dict[str, Any] = {
            "mode": "subscription" if request.recurring_interval else "payment",
            "line_items": [{"price_data": price_data, "quantity": request.quantity}],
            "client_reference_id": request.order_id,
            "metadata": request.metadata,
            "success_url": request.success_url,
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
        if self._tax_id_collection:
            params["tax_id_collection"] = {"enabled": True}
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        if not session.url:
            raise PaymentGatewayError("Stripe returned a session without a URL.", retryable=False)
        return HostedCheckout(session.id, session.url)

    async def invoice_payments(self, payment_intent: str) -> list[InvoicePayment]:
        """The invoices this payment intent paid or is paying, newest first; empty when it is no invoice's
        payment (a Checkout payment, another integration's). Stripe's Invoice Payments API:
        `GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=<pi>` (every page).
        Raises PaymentGatewayError (retryable for 5xx, 429 and connection failures)."""
        params: InvoicePaymentListParams = {
            "payment": {"type": "payment_intent", "payment_intent": payment_intent},
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

    async def checkout_session_of(self, payment_intent: str) -> CheckoutSessionRef | None:
        """The Checkout Session that created this payment intent, with its metadata
        (`GET /v1/checkout/sessions?payment_intent=`); None when no session did (an invoice's payment,
        another integration's). A refund or dispute can be told before the session's
        `checkout.session.completed`, which is where we learn the payment intent. Raises
        PaymentGatewayError (retryable for 5xx, 429 and connection failures)."""
        try:
            page = await self._client.v1.checkout.sessions.list_async(
                params={"payment_intent": payment_intent, "limit": 1}
            )
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        for found in page.data:
            fields = found.to_dict()
            metadata = fields.get("metadata")
            if isinstance(fields.get("id"), str):
                return CheckoutSessionRef(
                    session_id=fields["id"], metadata=dict(metadata) if isinstance(metadata, dict) else {}
                )
        return None

    async def invoice_subscription(self, invoice_id: str) -> InvoiceSubscription | None:
        """The subscription an invoice bills, with the metadata our checkout gave it
        (`parent.subscription_details`, API 2025-03-31 and later); None for an invoice of no subscription
        or no invoice at all. Raises PaymentGatewayError."""
        try:
            invoice = (await self._client.v1.invoices.retrieve_async(invoice_id)).to_dict()
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise _gateway_error(exc) from exc
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        parent = invoice.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, dict) else None
        if not isinstance(details, dict):
            return None
        subscription = details.get("subscription")
        if isinstance(subscription, dict):  # expanded
            subscription = subscription.get("id")
        metadata = details.get("metadata")
        if not isinstance(subscription, str) or not subscription:
            return None
        return InvoiceSubscription(subscription, dict(metadata) if isinstance(metadata, dict) else {})

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    def verify_event(self, body: bytes, signature_header: str | None) -> dict[str, Any]:
        """The event, if the raw body carries a valid signature no older than 5 minutes."""
        if not self._webhook_secret:
            raise InvalidPaymentSignature("no webhook secret")
        if signature_header is None or not signature_header.isascii():
            # The SDK's constant-time compare raises TypeError on non-ASCII text.
            raise InvalidPaymentSignature("missing or non-ASCII Stripe-Signature")
        try:
            stripe.Webhook.construct_event(
                body, signature_header, self._webhook_secret, tolerance=WEBHOOK_TOLERANCE_SECONDS
            )
            event = json.loads(body)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise InvalidPaymentSignature(str(exc)) from exc
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise InvalidPaymentSignature("not an event")
        return event

"""Stripe through its SDK (async over httpx): Checkout Sessions and signed webhook events."""

from __future__ import annotations

import json
from typing import Any

import stripe

from app.integrations.payments import (
    CheckoutRequest,
    HostedCheckout,
    InvalidPaymentSignature,
    PaymentGatewayError,
)

WEBHOOK_TOLERANCE_SECONDS = 300


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
    ) -> None:
        self._http = stripe.HTTPXClient()
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
            status = exc.http_status or 0
            retryable = isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or status >= 500
            raise PaymentGatewayError(
                f"Stripe: {exc.user_message or type(exc).__name__}", retryable=retryable
            ) from exc
        if not session.url:
            raise PaymentGatewayError("Stripe returned a session without a URL.", retryable=False)
        return HostedCheckout(session.id, session.url)

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

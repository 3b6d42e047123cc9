"""Dodo Payments through its SDK (async, httpx), webhooks verified with standardwebhooks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import dodopayments
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.integrations.payments import HostedCheckout, InvalidPaymentSignature, PaymentGatewayError


class DodoGateway:
    def __init__(
        self, *, api_key: str, webhook_secret: str | None, base_url: str, max_retries: int = 2
    ) -> None:
        self._client = dodopayments.AsyncDodoPayments(
            bearer_token=api_key, base_url=base_url, max_retries=max_retries
        )
        self._webhook_secret = webhook_secret

    async def create_checkout(
        self,
        *,
        product_id: str,
        quantity: int,
        amount: int | None,
        customer_email: str | None,
        metadata: dict[str, str],
        return_url: str,
        cancel_url: str,
    ) -> HostedCheckout:
        item: dict[str, Any] = {"product_id": product_id, "quantity": quantity}
        if amount is not None:
            item["amount"] = amount  # pay-what-you-want products take the price from the cart
        options: dict[str, Any] = {}
        if customer_email:
            options["customer"] = {"email": customer_email}
        try:
            session = await self._client.checkout_sessions.create(
                product_cart=[item],  # type: ignore[list-item]
                metadata=dict(metadata),
                return_url=return_url,
                cancel_url=cancel_url,
                **options,
            )
        except (
            dodopayments.APIConnectionError,
            dodopayments.RateLimitError,
            dodopayments.InternalServerError,
        ) as exc:
            raise PaymentGatewayError(
                f"Dodo Payments is unavailable: {type(exc).__name__}", retryable=True
            ) from exc
        except dodopayments.APIError as exc:
            raise PaymentGatewayError(
                f"Dodo Payments refused the checkout: {exc.message}", retryable=False
            ) from exc
        if not session.checkout_url:
            raise PaymentGatewayError("Dodo Payments returned no checkout URL.", retryable=False)
        return HostedCheckout(session.session_id, session.checkout_url)

    def verify_event(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """Standard Webhooks: webhook-id/-timestamp/-signature on the raw body, 5 minutes either way."""
        if not self._webhook_secret:
            raise InvalidPaymentSignature("no webhook secret")
        try:
            Webhook(self._webhook_secret).verify(body, dict(headers))
            event = json.loads(body)
        except (WebhookVerificationError, ValueError) as exc:
            raise InvalidPaymentSignature(str(exc)) from exc
        if not isinstance(event, dict):
            raise InvalidPaymentSignature("not an event")
        return event

    async def aclose(self) -> None:
        await self._client.close()

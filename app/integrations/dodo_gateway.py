"""Dodo Payments through its SDK (async, httpx): checkouts, payment lookups, and webhooks verified with
standardwebhooks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dodopayments
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.integrations.payments import HostedCheckout, InvalidPaymentSignature, PaymentGatewayError


@dataclass(frozen=True)
class DodoPayment:
    payment_id: str
    checkout_session_id: str | None
    metadata: dict[str, Any]


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

    async def payment(self, payment_id: str) -> DodoPayment | None:
        """A payment as Dodo has it now (`GET /payments/{id}`): which checkout made it, with its metadata;
        None when Dodo does not know it. A refund or dispute can be told before the payment's
        `payment.succeeded`. Raises PaymentGatewayError (retryable for 5xx, 429 and connection
        failures)."""
        try:
            found = await self._client.payments.retrieve(payment_id)
        except dodopayments.NotFoundError:
            return None
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
                f"Dodo Payments refused the payment lookup: {exc.message}", retryable=False
            ) from exc
        fields = found.to_dict()
        metadata = fields.get("metadata")
        session_id = fields.get("checkout_session_id")
        return DodoPayment(
            payment_id=str(fields.get("payment_id") or payment_id),
            checkout_session_id=session_id if isinstance(session_id, str) else None,
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
        )

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

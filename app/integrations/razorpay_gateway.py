"""Razorpay through its SDK (synchronous, so every call runs in a worker thread)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError, SignatureVerificationError

from app.integrations.payments import InvalidPaymentSignature, PaymentGatewayError


class RazorpayGateway:
    def __init__(self, *, key_id: str, key_secret: str, webhook_secret: str | None, base_url: str) -> None:
        self.key_id = key_id
        self._client = razorpay.Client(auth=(key_id, key_secret), base_url=base_url)
        self._webhook_secret = webhook_secret

    async def create_order(
        self, *, amount: int, currency: str, receipt: str, notes: dict[str, str]
    ) -> dict[str, Any]:
        payload = {"amount": amount, "currency": currency, "receipt": receipt[:40], "notes": notes}
        try:
            order: dict[str, Any] = await asyncio.to_thread(self._client.order.create, payload)
        except BadRequestError as exc:
            raise PaymentGatewayError(f"Razorpay refused the order: {exc}", retryable=False) from exc
        except (ServerError, GatewayError, requests.RequestException, ValueError) as exc:
            raise PaymentGatewayError(
                f"Razorpay is unavailable: {type(exc).__name__}", retryable=True
            ) from exc
        return order

    def verify_payment(self, *, order_id: str, payment_id: str, signature: str) -> None:
        if not _hex(signature):
            raise InvalidPaymentSignature("payment signature is not hex")
        try:
            self._client.utility.verify_payment_signature(
                {
                    "razorpay_order_id": order_id,
                    "razorpay_payment_id": payment_id,
                    "razorpay_signature": signature,
                }
            )
        except SignatureVerificationError as exc:
            raise InvalidPaymentSignature("payment signature mismatch") from exc

    def verify_event(self, body: bytes, signature: str | None) -> dict[str, Any]:
        if not self._webhook_secret or not signature or not _hex(signature):
            raise InvalidPaymentSignature("missing, malformed signature or no secret")
        try:
            text = body.decode("utf-8")
            self._client.utility.verify_webhook_signature(text, signature, self._webhook_secret)
            event = json.loads(text)
        except (SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidPaymentSignature(str(exc) or type(exc).__name__) from exc
        if not isinstance(event, dict):
            raise InvalidPaymentSignature("not an event")
        return event


def _hex(signature: str) -> bool:
    """The SDK compares str with hmac.compare_digest, which raises on non-ASCII input: screen it first."""
    return signature.isascii() and all(char in "0123456789abcdefABCDEF" for char in signature)

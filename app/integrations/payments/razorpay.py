"""Razorpay through its SDK (synchronous, so every call runs in a worker thread): orders for Razorpay
Checkout (which opens in the client with our key id), the checkout handler's payment signature, and signed
webhook events read into `PaymentEvent`s.

Event ids are the `x-razorpay-event-id` header (unsigned: the webhook inbox bounds it); a delivery without
one is identified by its own signed content. A refund or a dispute names its payment, whose entity (when
the event carries it) names the Razorpay order it paid, so no lookup is ever needed.

Disputes: Razorpay deducts the money only when a dispute is lost, but a chargeback counts as soon as it
opens (the customer has asked the bank for the money back; won gives it back). Phases that are questions
take nothing: a retrieval asks for details; a fraud-phase dispute is closed by details or by a refund
(refund.processed takes those credits), so `closed` changes nothing. Phases after a won chargeback re-open
it under the same id: each is a dispute of its own."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError, SignatureVerificationError

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
    Unhandled,
    integer,
    json_object,
    lower_keys,
    positive,
    text,
)

PAYMENT_EVENTS = frozenset({"payment.captured", "order.paid", "payment.failed"})
INQUIRY_PHASES = frozenset({"retrieval", "fraud"})
REOPENED_PHASES = frozenset({"pre_arbitration", "arbitration"})
# An id made up from the event's content must pass the webhook inbox's bounds, or it is digested.
_USABLE_EVENT_ID = re.compile(r"[\x21-\x7e]{1,255}")


class RazorpayGateway:
    def __init__(self, *, key_id: str, key_secret: str, webhook_secret: str | None, base_url: str) -> None:
        self._key_id = key_id
        self._client = razorpay.Client(auth=(key_id, key_secret), base_url=base_url)
        self._webhook_secret = webhook_secret

    @property
    def client_key(self) -> str:
        return self._key_id

    @property
    def webhooks_enabled(self) -> bool:
        return bool(self._webhook_secret)

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """A Razorpay order (`POST /v1/orders`). Its API takes no idempotency key: the receipt is our
        order's id, which identifies the purchase (a new order of ours per request; a retried request
        with the same Idempotency-Key is replayed before it gets here)."""
        payload = {
            "amount": request.amount,
            "currency": request.currency,
            "receipt": request.order_id.hex,
            "notes": request.metadata,
        }
        try:
            order: dict[str, Any] = await asyncio.to_thread(self._client.order.create, payload)
        except BadRequestError as exc:
            raise PaymentGatewayError(f"Razorpay refused the order: {exc}", retryable=False) from exc
        except (ServerError, GatewayError, requests.RequestException, ValueError) as exc:
            raise PaymentGatewayError(
                f"Razorpay is unavailable: {type(exc).__name__}", retryable=True
            ) from exc
        return Checkout(str(order["id"]), None)

    def verify_client_payment(self, checkout_id: str, payment_id: str, signature: str) -> None:
        """HMAC-SHA256 of `order_id|payment_id` with the API key secret."""
        if not _hex(signature):
            raise InvalidSignature("payment signature is not hex")
        try:
            self._client.utility.verify_payment_signature(
                {
                    "razorpay_order_id": checkout_id,
                    "razorpay_payment_id": payment_id,
                    "razorpay_signature": signature,
                }
            )
        except SignatureVerificationError as exc:
            raise InvalidSignature("payment signature mismatch") from exc

    async def checkout_of(self, payment_id: str) -> OrderRef | None:
        return None  # every refund and dispute event carries its payment's order

    async def invoices_paid_by(self, payment_id: str) -> list[InvoicePayment]:
        return []  # we sell no Razorpay subscriptions

    async def invoice_subscription(self, invoice_id: str) -> InvoiceSubscription | None:
        return None

    async def aclose(self) -> None:
        return None

    def read_event(self, payload: dict[str, Any]) -> PaymentEvent:
        return _event(payload)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> tuple[str, PaymentEvent]:
        """X-Razorpay-Signature: HMAC-SHA256 of the raw body with the webhook secret."""
        headers = lower_keys(headers)
        signature = headers.get("x-razorpay-signature")
        if not self._webhook_secret or not signature or not _hex(signature):
            raise InvalidSignature("missing, malformed signature or no secret")
        try:
            text_body = body.decode("utf-8")
            self._client.utility.verify_webhook_signature(text_body, signature, self._webhook_secret)
            event = json.loads(text_body)
        except (SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidSignature(str(exc) or type(exc).__name__) from exc
        if not isinstance(event, dict):
            raise InvalidSignature("not an event")
        event_id = headers.get("x-razorpay-event-id")
        return (event_id if event_id is not None else _made_up_event_id(event)), _event(event)


def _made_up_event_id(event: dict[str, Any]) -> str:
    """No header: the event's own (signed) content identifies it, digested when it is too long."""
    payload = json_object(event.get("payload"))
    entity_id = _entity(payload, "payment").get("id") or _entity(payload, "dispute").get("id")
    made_up = f"{event.get('event')}:{entity_id}:{event.get('created_at')}"
    if _USABLE_EVENT_ID.fullmatch(made_up):
        return made_up
    return "sha256:" + hashlib.sha256(made_up.encode("utf-8", "surrogatepass")).hexdigest()


def _entity(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return json_object(json_object(payload.get(name)).get("entity"))


def _event(event: dict[str, Any]) -> PaymentEvent:
    event_type = str(event.get("event"))
    told: dict[str, Any] = {"type": event_type, "payload": event}
    payload = json_object(event.get("payload"))
    payment = _entity(payload, "payment")
    if event_type in PAYMENT_EVENTS:
        order_id = payment.get("order_id") or _entity(payload, "order").get("id")
        if not order_id:
            return Unhandled(**told)
        order = OrderRef(checkout_id=str(order_id))
        if event_type == "payment.failed":
            reason = str(payment.get("error_description") or "payment failed")
            return PaymentFailed(order=order, reason=reason, **told)
        currency = payment.get("currency")
        return CheckoutPaid(
            order=order,
            payment_id=str(payment["id"]) if payment.get("id") else None,
            amount=integer(payment.get("amount")),
            currency=currency if isinstance(currency, str) else None,
            **told,
        )
    if event_type == "refund.processed":
        refund = _entity(payload, "refund")
        paid = _payment(refund, payment)
        if paid is None or not refund.get("id"):
            return Unhandled(**told)
        amount = positive(refund.get("amount")) or 0
        return Refunded(payment=paid, refund_id=str(refund["id"]), amount=amount, **told)
    if event_type.startswith("payment.dispute."):
        return _dispute(
            event_type.removeprefix("payment.dispute."), _entity(payload, "dispute"), payment, told
        )
    return Unhandled(**told)


def _payment(about: dict[str, Any], payment: dict[str, Any]) -> PaymentRef | None:
    """The payment a refund or dispute names, with the Razorpay order its entity (when the event carries
    that payment's) says it paid."""
    payment_id = text(about.get("payment_id") or payment.get("id"))
    if payment_id is None:
        return None
    order_id = text(payment.get("order_id"))
    order = OrderRef(checkout_id=order_id) if payment.get("id") == payment_id and order_id else OrderRef()
    return PaymentRef(payment_id, order)


def _dispute(
    action: str, dispute: dict[str, Any], payment: dict[str, Any], told: dict[str, Any]
) -> PaymentEvent:
    """`payment.dispute.{created,under_review,action_required,lost,won,closed}`: the Dispute entity has `id`
    disp_..., `payment_id`, `amount`, `currency`, `phase`, `status`."""
    paid = _payment(dispute, payment)
    if paid is None or not dispute.get("id"):
        return Unhandled(**told)
    phase = str(dispute.get("phase"))
    currency = dispute.get("currency")
    return Disputed(
        payment=paid,
        dispute_id=str(dispute["id"]) + (f":{phase}" if phase in REOPENED_PHASES else ""),
        effect=_dispute_effect(action, phase),
        amount=positive(dispute.get("amount")),
        currency=currency if isinstance(currency, str) else None,
        **told,
    )


def _dispute_effect(action: str, phase: str) -> DisputeEffect | None:
    if action == "lost":
        return "chargeback"
    if phase in INQUIRY_PHASES:
        return None  # nothing was taken for a question, so nothing is given back either
    if action == "won":
        return "won"
    if action in ("created", "under_review", "action_required"):
        return "chargeback"
    return None


def _hex(signature: str) -> bool:
    """The SDK compares str with hmac.compare_digest, which raises on non-ASCII input: screen it first."""
    return signature.isascii() and all(char in "0123456789abcdefABCDEF" for char in signature)

"""A fake Dodo Payments speaking its real contracts (providers.md §0 and §5; SDK ``dodopayments`` 1.123.0).

Routes registered on the respx router (the SDK talks through httpx):

* ``POST {base_url}/checkouts`` — Bearer auth, JSON body, ``product_cart`` validation, the
  ``CheckoutSessionResponse`` shape (SDK: ``client.checkout_sessions.create(...)``).
  An ``Idempotency-Key`` header replays the first answer to the same key and body (Dodo documents no
  idempotency header **(unverified)**; the gateway sends the common one).
* ``GET {base_url}/checkouts/{id}`` — the ``CheckoutSessionStatus`` shape
  (SDK: ``client.checkout_sessions.retrieve(id)``).
* ``GET {base_url}/payments/{id}`` — a Payment made by the event builders (``payment_succeeded`` …), as
  Dodo has it now (SDK: ``client.payments.retrieve(id)``); 404 for a payment it never made.

Errors are JSON ``{"code": ..., "message": ...}`` (docs.dodopayments.com/api-reference/error-codes); the
specific codes used here for auth/validation are illustrative **(unverified)**.

Webhooks are Standard Webhooks: :meth:`FakeDodo.deliver` serializes an event once and signs it with
``standardwebhooks.Webhook(secret).sign(...)`` into ``webhook-id`` / ``webhook-timestamp`` /
``webhook-signature``.
"""

from __future__ import annotations

import base64
import copy
import hmac
import json
import re
import secrets
import string
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import respx
from standardwebhooks import Webhook

_ALPHANUMERIC = string.ascii_letters + string.digits
SUBSCRIPTION_STATUS = {
    "active": "active",
    "renewed": "active",
    "updated": "active",
    "plan_changed": "active",
    "unpaused": "active",
    "update_payment_method": "active",
    "on_hold": "on_hold",
    "past_due": "past_due",
    "paused": "paused",
    "cancelled": "cancelled",
    "failed": "failed",
    "expired": "expired",
}
"""``subscription.<kind>`` event → the subscription ``status`` it carries."""
DISPUTE_KINDS = ("opened", "challenged", "accepted", "cancelled", "expired", "won", "lost")
"""``dispute.<kind>`` events (SDK ``WebhookEventType``); the dispute's status is ``dispute_<kind>``."""


def new_id(prefix: str, length: int = 20) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def rfc3339(moment: datetime | None = None) -> str:
    """``2026-01-01T00:00:05.123456Z``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def generate_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def _utc(moment: datetime | None) -> datetime:
    # standardwebhooks signs `timestamp.replace(tzinfo=utc)`: normalise so header and signature agree.
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class _Invalid(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_FAILURES = {
    400: ("INVALID_REQUEST", "The request was malformed or contained invalid parameters"),
    401: ("UNAUTHORIZED", "Authentication failed or API key is invalid"),
    403: ("FORBIDDEN", "The API key doesn't have permission to access the requested resource"),
    404: ("NOT_FOUND", "The requested resource doesn't exist"),
    409: ("CONFLICT", "The request conflicts with the current state of the resource"),
    422: ("UNPROCESSABLE_ENTITY", "The request was well-formed but contained semantic errors"),
    429: ("TOO_MANY_REQUESTS", "Rate limit exceeded"),
    502: ("BAD_GATEWAY", "The server received an invalid response from an upstream server"),
    503: ("SERVICE_UNAVAILABLE", "The service is temporarily unavailable"),
    504: ("GATEWAY_TIMEOUT", "The server timed out while waiting for an upstream response"),
}


class FakeDodo:
    def __init__(
        self,
        router: respx.MockRouter,
        base_url: str = "https://test.dodopayments.com",
        api_key: str = "dodo_test_fake",
        webhook_secret: str | None = None,
        *,
        business_id: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.webhook_secret = webhook_secret or generate_secret()
        self.business_id = business_id or new_id("bus", 12)
        self.checkouts: dict[str, dict[str, Any]] = {}
        """Request body of every created checkout session, by ``session_id``."""
        self.sessions: dict[str, dict[str, Any]] = {}
        """``GET /checkouts/{id}`` state of each session (the payment event builders set its payment)."""
        self.payments: dict[str, dict[str, Any]] = {}
        """Every Payment the event builders made, by ``payment_id`` (served by ``GET /payments/{id}``)."""
        self.requests: list[httpx.Request] = []
        self._idempotency: dict[str, tuple[bytes, dict[str, Any]]] = {}
        self._failures: list[int] = []
        self._timeouts: list[bool] = []
        self._payment_lookup_failures: list[int] = []
        router.post(f"{self.base_url}/checkouts").mock(side_effect=self._create)
        router.get(url__regex=rf"^{re.escape(self.base_url)}/checkouts/(?P<session_id>[^/?]+)$").mock(
            side_effect=self._retrieve
        )
        router.get(url__regex=rf"^{re.escape(self.base_url)}/payments/(?P<payment_id>[^/?]+)$").mock(
            side_effect=self._retrieve_payment
        )

    # -- switches --

    def fail_next(self, status: int = 500) -> None:
        """The next ``POST /checkouts`` answers ``status`` with a ``{"code", "message"}`` body (calls
        queue up)."""
        self._failures.append(status)

    def timeout_next(self, *, created: bool = False) -> None:
        """The next ``POST /checkouts`` raises ``httpx.ReadTimeout`` (the SDK raises ``APITimeoutError`` and
        retries). ``created=True``: the session was created but the answer was lost; a retry with the same
        ``Idempotency-Key`` gets that session back."""
        self._timeouts.append(created)

    def fail_payment_lookup_next(self, status: int = 500) -> None:
        """The next ``GET /payments/{id}`` answers ``status`` (calls queue up)."""
        self._payment_lookup_failures.append(status)

    # -- HTTP --

    @staticmethod
    def _error(status: int, code: str, message: str) -> httpx.Response:
        return httpx.Response(status, json={"code": code, "message": message})

    def _authenticated(self, request: httpx.Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token, self.api_key)

    def _create(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self._authenticated(request):
            return self._error(401, *_FAILURES[401])
        if self._failures:
            status = self._failures.pop(0)
            code, message = _FAILURES.get(status, ("INTERNAL_SERVER_ERROR", "An unexpected error occurred"))
            return self._error(status, code, message)
        timeout = self._timeouts.pop(0) if self._timeouts else None
        if timeout is False:
            raise httpx.ReadTimeout("The read operation timed out", request=request)
        key = request.headers.get("idempotency-key")
        if key is not None and key in self._idempotency:
            content, answer = self._idempotency[key]
            if content != request.content:
                return self._error(409, "IDEMPOTENCY_KEY_REUSED", "This key was used with another request")
            return httpx.Response(200, json=copy.deepcopy(answer))
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            return self._error(400, "INVALID_REQUEST_BODY", "Failed to parse the request body as JSON")
        try:
            _validate_checkout(body)
        except _Invalid as invalid:
            return self._error(invalid.status, invalid.code, invalid.message)
        answer = self._create_session(body)
        if key is not None:
            self._idempotency[key] = (request.content, copy.deepcopy(answer))
        if timeout:  # created, and the answer is lost
            raise httpx.ReadTimeout("The read operation timed out", request=request)
        return httpx.Response(200, json=answer)

    def _create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        session_id = new_id("cks", 24)
        self.checkouts[session_id] = body
        customer = body.get("customer") or {}
        self.sessions[session_id] = {
            "id": session_id,
            "created_at": rfc3339(),
            "customer_email": customer.get("email"),
            "customer_name": customer.get("name"),
            "payment_id": None,
            "payment_status": None,
        }
        return {
            "session_id": session_id,
            "checkout_url": None
            if body.get("payment_method_id")
            else f"https://checkout.dodopayments.com/session/{session_id}",
            "client_secret": None,
            "payment_id": None,
            "publishable_key": None,
        }

    def _retrieve(self, request: httpx.Request, session_id: str) -> httpx.Response:
        self.requests.append(request)
        if not self._authenticated(request):
            return self._error(401, *_FAILURES[401])
        session = self.sessions.get(session_id)
        if session is None:
            return self._error(404, "NOT_FOUND", f"Checkout session {session_id} not found")
        return httpx.Response(200, json=copy.deepcopy(session))

    def _retrieve_payment(self, request: httpx.Request, payment_id: str) -> httpx.Response:
        self.requests.append(request)
        if not self._authenticated(request):
            return self._error(401, *_FAILURES[401])
        if self._payment_lookup_failures:
            status = self._payment_lookup_failures.pop(0)
            code, message = _FAILURES.get(status, ("INTERNAL_SERVER_ERROR", "An unexpected error occurred"))
            return self._error(status, code, message)
        payment = self.payments.get(payment_id)
        if payment is None:
            return self._error(404, "NOT_FOUND", f"Payment {payment_id} not found")
        return httpx.Response(200, json={k: v for k, v in payment.items() if k != "payload_type"})

    # -- events --

    def event(
        self, event_type: str, data: dict[str, Any], *, timestamp: datetime | None = None
    ) -> dict[str, Any]:
        """The envelope ``{"business_id", "type", "timestamp", "data"}``."""
        return {
            "business_id": self.business_id,
            "type": event_type,
            "timestamp": rfc3339(timestamp),
            "data": copy.deepcopy(data),
        }

    def _customer(self, session_id: str | None, customer: Mapping[str, str] | None) -> dict[str, Any]:
        requested = (self.checkouts.get(session_id or "") or {}).get("customer") or {}
        merged = {
            "customer_id": requested.get("customer_id") or new_id("cus", 14),
            "email": requested.get("email") or "jane@example.com",
            "name": requested.get("name") or "Jane Doe",
        }
        merged.update(customer or {})
        return merged

    def _billing(self, session_id: str | None) -> dict[str, Any]:
        address = (self.checkouts.get(session_id or "") or {}).get("billing_address") or {}
        return {
            "country": address.get("country", "US"),
            "city": address.get("city", "San Francisco"),
            "state": address.get("state", "CA"),
            "street": address.get("street", "1 Market St"),
            "zipcode": address.get("zipcode", "94105"),
        }

    def payment(
        self,
        session_id: str | None,
        *,
        status: str,
        total_amount: int,
        currency: str,
        metadata: Mapping[str, str] | None = None,
        payment_id: str | None = None,
        customer: Mapping[str, str] | None = None,
        subscription_id: str | None = None,
        product_cart: list[dict[str, Any]] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        """A Payment object (``data`` of ``payment.*``). Omitted ``metadata``/``customer``/``product_cart``
        come from the checkout session's request, as Dodo copies them onto the payment."""
        requested = self.checkouts.get(session_id or "") or {}
        now = rfc3339()
        succeeded = status == "succeeded"
        cart = product_cart if product_cart is not None else requested.get("product_cart") or []
        payment = {
            "payload_type": "Payment",
            "payment_id": payment_id or new_id("pay"),
            "business_id": self.business_id,
            "brand_id": self.business_id,
            "status": status,
            "total_amount": total_amount,
            "tax": 0,
            "currency": currency,
            "settlement_amount": total_amount,
            "settlement_currency": currency,
            "payment_provider": "dodo",
            "payment_method": "card",
            "payment_method_type": "visa",
            "card_last_four": "4242",
            "card_network": "visa",
            "card_type": "credit",
            "customer": self._customer(session_id, customer),
            "billing": self._billing(session_id),
            "metadata": dict(metadata if metadata is not None else requested.get("metadata") or {}),
            "checkout_session_id": session_id,
            "product_cart": [{"product_id": p["product_id"], "quantity": p.get("quantity", 1)} for p in cart],
            "subscription_id": subscription_id,
            "subscription_ids": [subscription_id] if subscription_id else [],
            "is_multi_subscription": False,
            "is_update_payment_method": False,
            "includes_usage": False,
            "digital_products_delivered": succeeded,
            "retry_attempt": 0,
            "service_periods": [],
            "disputes": [],
            "refunds": [],
            "discount_id": None,
            "error_code": error_code,
            "error_message": error_message,
            "created_at": now,
            "updated_at": now,
        }
        self.payments[payment["payment_id"]] = copy.deepcopy(payment)
        return payment

    def payment_succeeded(
        self,
        session_id: str | None,
        *,
        total_amount: int,
        currency: str,
        metadata: Mapping[str, str] | None = None,
        payment_id: str | None = None,
        customer: Mapping[str, str] | None = None,
        subscription_id: str | None = None,
        product_cart: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """``payment.succeeded`` for a checkout session (``GET /checkouts/{id}`` then shows the payment)."""
        data = self.payment(
            session_id,
            status="succeeded",
            total_amount=total_amount,
            currency=currency,
            metadata=metadata,
            payment_id=payment_id,
            customer=customer,
            subscription_id=subscription_id,
            product_cart=product_cart,
        )
        self._settle(session_id, data)
        return self.event("payment.succeeded", data)

    def payment_failed(
        self,
        session_id: str | None,
        *,
        total_amount: int,
        currency: str,
        metadata: Mapping[str, str] | None = None,
        payment_id: str | None = None,
        customer: Mapping[str, str] | None = None,
        subscription_id: str | None = None,
        error_code: str = "CARD_DECLINED",
        error_message: str = "The card was declined by the issuing bank",
    ) -> dict[str, Any]:
        """``payment.failed`` with ``error_code``/``error_message``."""
        data = self.payment(
            session_id,
            status="failed",
            total_amount=total_amount,
            currency=currency,
            metadata=metadata,
            payment_id=payment_id,
            customer=customer,
            subscription_id=subscription_id,
            error_code=error_code,
            error_message=error_message,
        )
        self._settle(session_id, data)
        return self.event("payment.failed", data)

    def _settle(self, session_id: str | None, payment: dict[str, Any]) -> None:
        session = self.sessions.get(session_id or "")
        if session is not None:
            session["payment_id"] = payment["payment_id"]
            session["payment_status"] = payment["status"]
            session["customer_email"] = payment["customer"]["email"]
            session["customer_name"] = payment["customer"]["name"]

    def refund_succeeded(
        self,
        payment_id: str,
        amount: int,
        currency: str,
        metadata: Mapping[str, str] | None = None,
        *,
        is_partial: bool = False,
        refund_id: str | None = None,
        customer: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """``refund.succeeded``: a Refund (``refund_id``, ``payment_id``, ``amount``, ``is_partial``,
        ``status``)."""
        data = {
            "payload_type": "Refund",
            "refund_id": refund_id or new_id("ref"),
            "payment_id": payment_id,
            "business_id": self.business_id,
            "brand_id": self.business_id,
            "status": "succeeded",
            "amount": amount,
            "currency": currency,
            "is_partial": is_partial,
            "reason": reason,
            "customer": self._customer(None, customer),
            "metadata": dict(metadata or {}),
            "network_reference": None,
            "network_reference_type": None,
            "network_reference_updated_at": None,
            "created_at": rfc3339(),
        }
        return self.event("refund.succeeded", data)

    def dispute_event(
        self,
        kind: str,
        payment_id: str,
        amount: str,
        currency: str,
        *,
        dispute_id: str | None = None,
        stage: str = "dispute",
        is_resolved_by_rdr: bool | None = None,
        remarks: str | None = None,
    ) -> dict[str, Any]:
        """``dispute.<kind>`` (``opened``, ``challenged``, ``accepted``, ``cancelled``, ``expired``,
        ``won``, ``lost``): a Dispute (``dispute_id``, ``payment_id``, ``amount`` as a string — Dodo
        documents no unit for it —, ``currency``, ``dispute_stage``, ``dispute_status`` =
        ``dispute_<kind>``). Re-use ``dispute_id`` for the later events of one dispute."""
        if kind not in DISPUTE_KINDS:
            raise ValueError(f"unknown dispute event kind {kind!r}")
        data: dict[str, Any] = {
            "payload_type": "Dispute",
            "dispute_id": dispute_id or new_id("dsp"),
            "payment_id": payment_id,
            "business_id": self.business_id,
            "amount": amount,
            "currency": currency,
            "dispute_stage": stage,
            "dispute_status": f"dispute_{kind}",
            "created_at": rfc3339(),
            "remarks": remarks,
        }
        if is_resolved_by_rdr is not None:
            data["is_resolved_by_rdr"] = is_resolved_by_rdr
        return self.event(f"dispute.{kind}", data)

    def subscription_event(
        self,
        kind: str,
        subscription_id: str,
        metadata: Mapping[str, str] | None = None,
        *,
        status: str | None = None,
        product_id: str = "pdt_pro_monthly",
        customer: Mapping[str, str] | None = None,
        currency: str = "USD",
        recurring_pre_tax_amount: int = 999,
        next_billing_date: datetime | None = None,
        previous_billing_date: datetime | None = None,
        cancel_at_next_billing_date: bool = False,
        payment_frequency_interval: str = "Month",
    ) -> dict[str, Any]:
        """``subscription.<kind>`` (``active``, ``renewed``, ``on_hold``, ``cancelled``, ``expired``,
        ``failed``, ``past_due``, ``paused``, ``updated`` …); ``status`` defaults per
        :data:`SUBSCRIPTION_STATUS`."""
        if kind not in SUBSCRIPTION_STATUS:
            raise ValueError(f"unknown subscription event kind {kind!r}")
        now = datetime.now(UTC)
        previous = previous_billing_date or now
        status = status or SUBSCRIPTION_STATUS[kind]
        ended = status in ("cancelled", "expired", "failed")
        data = {
            "payload_type": "Subscription",
            "subscription_id": subscription_id,
            "brand_id": self.business_id,
            "status": status,
            "product_id": product_id,
            "quantity": 1,
            "currency": currency,
            "recurring_pre_tax_amount": recurring_pre_tax_amount,
            "tax_inclusive": False,
            "payment_frequency_count": 1,
            "payment_frequency_interval": payment_frequency_interval,
            "subscription_period_count": 10,
            "subscription_period_interval": "Year",
            "trial_period_days": 0,
            "next_billing_date": rfc3339(next_billing_date or previous + timedelta(days=30)),
            "previous_billing_date": rfc3339(previous),
            "cancel_at_next_billing_date": cancel_at_next_billing_date,
            "cancelled_at": rfc3339(now) if status == "cancelled" else None,
            "expires_at": rfc3339(now) if ended else None,
            "on_demand": False,
            "has_payment_method": True,
            "customer": self._customer(None, customer),
            "billing": self._billing(None),
            "metadata": dict(metadata or {}),
            "addons": [],
            "meters": [],
            "credit_entitlement_cart": [],
            "meter_credit_entitlement_cart": [],
            "created_at": rfc3339(previous),
        }
        return self.event(f"subscription.{kind}", data)

    # -- webhooks --

    def sign(
        self,
        body: bytes,
        *,
        msg_id: str,
        timestamp: datetime,
        secret: str | None = None,
        extra_secrets: Iterable[str] = (),
    ) -> str:
        """``webhook-signature``: ``v1,<b64>``, plus one more per ``extra_secrets`` (rotation)."""
        text = body.decode("utf-8")
        return " ".join(
            Webhook(key).sign(msg_id, timestamp, text)
            for key in (secret or self.webhook_secret, *extra_secrets)
        )

    def deliver(
        self,
        event: dict[str, Any],
        *,
        msg_id: str | None = None,
        timestamp: datetime | None = None,
        secret: str | None = None,
        extra_secrets: Iterable[str] = (),
    ) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of one delivery, serialized once and signed as-is. ``timestamp`` (default now;
        naive = UTC) is the ``webhook-timestamp``; re-use ``msg_id`` to simulate a redelivery."""
        moment = _utc(timestamp)
        message_id = msg_id or new_id("msg", 27)
        body = json.dumps(event, separators=(",", ":")).encode("utf-8")
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": self.sign(
                body, msg_id=message_id, timestamp=moment, secret=secret, extra_secrets=extra_secrets
            ),
        }
        return body, headers


def _validate_checkout(body: Any) -> None:
    if not isinstance(body, dict):
        raise _Invalid(422, "INVALID_REQUEST_BODY", "The request body must be a JSON object")
    if "product_cart" not in body:
        raise _Invalid(422, "INVALID_REQUEST_BODY", "missing field `product_cart`")
    cart = body["product_cart"]
    if not isinstance(cart, list):
        raise _Invalid(422, "INVALID_REQUEST_BODY", "product_cart: invalid type, expected a sequence")
    if not cart and not body.get("product_collection_id"):
        # An empty cart is only valid for the product-collection flow (SDK docstring).
        raise _Invalid(400, "INVALID_REQUEST", "product_cart must contain at least one product")
    if len(cart) > 20:
        raise _Invalid(400, "INVALID_REQUEST", "product_cart can contain at most 20 products")
    for index, item in enumerate(cart):
        if not isinstance(item, dict):
            raise _Invalid(
                422, "INVALID_REQUEST_BODY", f"product_cart[{index}]: invalid type, expected a map"
            )
        for field in ("product_id", "quantity"):
            if field not in item:
                raise _Invalid(422, "INVALID_REQUEST_BODY", f"product_cart[{index}]: missing field `{field}`")
        if not isinstance(item["product_id"], str) or not item["product_id"]:
            raise _Invalid(
                422, "INVALID_REQUEST_BODY", f"product_cart[{index}].product_id: expected a string"
            )
        quantity = item["quantity"]
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise _Invalid(
                422,
                "INVALID_REQUEST_BODY",
                f"product_cart[{index}].quantity: expected a non-negative integer",
            )
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values())
    ):
        raise _Invalid(422, "INVALID_REQUEST_BODY", "metadata: expected a map of strings")
    customer = body.get("customer")
    if customer is not None and not (
        isinstance(customer, dict) and ("email" in customer or "customer_id" in customer)
    ):
        raise _Invalid(422, "INVALID_REQUEST_BODY", "customer: expected {email, ...} or {customer_id}")

"""A fake Razorpay speaking Razorpay's real contracts (providers.md §0 and §4).

The ``razorpay`` SDK talks through ``requests``, which respx cannot intercept, so this fake is a real HTTP
server: a Starlette app served by uvicorn on ``127.0.0.1:<free port>`` in a background thread. Use it as a
context manager (or ``start()``/``stop()``) and point the SDK at it: ``razorpay.Client(auth=(key_id,
key_secret), base_url=fake.base_url)`` (no ``/v1``: the SDK appends ``/v1/orders``).

Routes: ``POST /v1/orders`` (Basic auth, JSON body, Razorpay's validation errors), ``GET /v1/orders/{id}``,
``GET /v1/orders/{id}/payments``, ``GET /v1/payments/{id}``.

The "customer" is :meth:`FakeRazorpay.pay` (the Standard Checkout handler result, signed with
``key_secret``); webhook envelopes come from the ``*_event`` builders and :meth:`FakeRazorpay.deliver` signs
one (hex HMAC-SHA256 of the raw body with the **webhook** secret, which is not the API key secret).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import secrets
import socket
import string
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_ALPHANUMERIC = string.ascii_letters + string.digits
_ORDER_FIELDS = {
    "amount",
    "currency",
    "receipt",
    "notes",
    "partial_payment",
    "first_payment_min_amount",
    "payment_capture",
    "offer_id",
    "method",
    "customer_id",
    "token",
    "bank_account",
    "transfers",
    "line_items_total",
    "line_items",
    "discount",
    "rto_review",
    "shipping_fee",
    "cod_fee",
    "promotions",
    "customer_details",
    "phonepe_switch_context",
}


def new_id(prefix: str) -> str:
    """A Razorpay-style id: prefix + ``_`` + 14 base62 characters (``order_EKwxwAgItmmXdp``)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(14))


def payment_signature(order_id: str, payment_id: str, key_secret: str) -> str:
    """The Standard Checkout signature: hex HMAC-SHA256(key_secret, ``order_id|payment_id``)."""
    return hmac.new(key_secret.encode(), f"{order_id}|{payment_id}".encode(), hashlib.sha256).hexdigest()


def webhook_signature(body: bytes, webhook_secret: str) -> str:
    """``X-Razorpay-Signature``: hex HMAC-SHA256(webhook_secret, raw body)."""
    return hmac.new(webhook_secret.encode(), body, hashlib.sha256).hexdigest()


def _notes(notes: dict[str, Any] | list[Any] | None) -> dict[str, Any] | list[Any]:
    """Razorpay serializes empty notes as ``[]``, set notes as an object."""
    return dict(notes) if notes else []


def _error(
    status: int,
    description: str,
    *,
    code: str = "BAD_REQUEST_ERROR",
    field: str | None = None,
    business: bool = True,
) -> JSONResponse:
    error: dict[str, Any] = {
        "code": code,
        "description": description,
        "source": "business" if business else "NA",
        "step": "payment_initiation" if business else "NA",
        "reason": "input_validation_failed" if business else "NA",
        "metadata": {},
    }
    if field is not None:
        error["field"] = field
    return JSONResponse({"error": error}, status_code=status)


class _InvalidOrder(Exception):
    def __init__(self, description: str, field: str) -> None:
        super().__init__(description)
        self.description = description
        self.field = field


class FakeRazorpay:
    def __init__(
        self,
        key_id: str = "rzp_test_fake",
        key_secret: str = "fake_key_secret",  # noqa: S107
        webhook_secret: str = "fake_webhook_secret",  # noqa: S107
        *,
        account_id: str | None = None,
    ) -> None:
        self.key_id = key_id
        self.key_secret = key_secret
        self.webhook_secret = webhook_secret
        self.account_id = account_id or new_id("acc")
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        """Dispute entities by id, moved on by :meth:`dispute_event`."""
        self.requests: list[dict[str, Any]] = []
        """Every API request: ``{"method", "path", "headers", "body"}`` (body = parsed JSON or None)."""
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/orders", self._create_order, methods=["POST"]),
                Route("/v1/orders/{order_id}", self._get_order, methods=["GET"]),
                Route("/v1/orders/{order_id}/payments", self._get_order_payments, methods=["GET"]),
                Route("/v1/payments/{payment_id}", self._get_payment, methods=["GET"]),
            ]
        )

    # -- lifecycle --

    @property
    def base_url(self) -> str:
        if self._socket is None:
            raise RuntimeError("FakeRazorpay is not running: use `with FakeRazorpay() as fake` or start()")
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout: float = 10.0) -> FakeRazorpay:
        """Serve on a free port of 127.0.0.1 and return once uvicorn accepts connections."""
        if self._server is not None:
            raise RuntimeError("already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            http="h11",
            ws="none",
            loop="asyncio",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-razorpay", daemon=True
        )
        self._socket, self._server, self._thread = sock, server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("FakeRazorpay did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread, close the listening socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():  # pragma: no cover - only when a client holds a request open
                assert self._server is not None
                self._server.force_exit = True
                self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = None
        self._socket = None

    def __enter__(self) -> FakeRazorpay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- switches --

    def fail_next(self, status: int = 500) -> None:
        """The next ``POST /v1/orders`` answers ``status`` (calls queue up): 5xx → ``SERVER_ERROR`` (the
        SDK raises ``ServerError``), 502/504 → ``GATEWAY_ERROR`` (``GatewayError``), 4xx →
        ``BAD_REQUEST_ERROR``."""
        with self._lock:
            self._failures.append(status)

    # -- HTTP --

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "headers": dict(request.headers),
                    "body": body,
                }
            )
        return body

    def _authenticated(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            key_id, _, key_secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(key_id, self.key_id) and hmac.compare_digest(key_secret, self.key_secret)

    @staticmethod
    def _unauthorized() -> JSONResponse:
        # Body shape (unverified): BAD_REQUEST_ERROR with "Authentication failed" and NA source/step/reason.
        return _error(401, "Authentication failed", business=False)

    async def _create_order(self, request: Request) -> JSONResponse:
        body = await self._record(request)
        if not self._authenticated(request):
            return self._unauthorized()
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return self._failure(failure)
        if not isinstance(body, dict):
            return _error(400, "The request body should be a valid JSON object.")
        try:
            order = self._build_order(body)
        except _InvalidOrder as invalid:
            return _error(400, invalid.description, field=invalid.field)
        with self._lock:
            self.orders[order["id"]] = order
        return JSONResponse(order)

    @staticmethod
    def _failure(status: int) -> JSONResponse:
        if status in (502, 504):
            return _error(
                status,
                "Payment processing failed due to error at bank or wallet gateway",
                code="GATEWAY_ERROR",
                business=False,
            )
        if status >= 500:
            return _error(
                status,
                "The server encountered an error. The incident has been reported to admins.",
                code="SERVER_ERROR",
                business=False,
            )
        if status == 429:
            return _error(status, "Too many requests", business=False)
        return _error(status, "Bad request", business=False)

    def _build_order(self, body: dict[str, Any]) -> dict[str, Any]:
        extra = sorted(set(body) - _ORDER_FIELDS)
        if extra:
            raise _InvalidOrder(f"{', '.join(extra)} is/are not required and should not be sent", extra[0])
        if "amount" not in body or body["amount"] in (None, ""):
            raise _InvalidOrder("The amount field is required.", "amount")
        amount = body["amount"]
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise _InvalidOrder("The amount must be an integer.", "amount")
        currency = body.get("currency")
        if not currency:
            raise _InvalidOrder("The currency field is required.", "currency")
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
            raise _InvalidOrder("The selected currency is invalid.", "currency")
        if amount < 100:
            raise _InvalidOrder(f"The amount must be at least {currency} 1.00", "amount")
        receipt = body.get("receipt")
        if receipt is not None and (not isinstance(receipt, str) or len(receipt) > 40):
            raise _InvalidOrder("The receipt may not be greater than 40 characters.", "receipt")
        notes = body.get("notes") or {}
        if not isinstance(notes, dict):
            raise _InvalidOrder("The notes must be an array.", "notes")
        if len(notes) > 15:
            raise _InvalidOrder("Number of fields in notes should be less than or equal to 15", "notes")
        for key, value in notes.items():
            if len(str(value)) > 256:
                raise _InvalidOrder(f"The notes.{key} may not be greater than 256 characters.", "notes")
        return {
            "id": new_id("order"),
            "entity": "order",
            "amount": amount,
            "amount_paid": 0,
            "amount_due": amount,
            "currency": currency,
            "receipt": receipt,
            "offer_id": body.get("offer_id"),
            "status": "created",
            "attempts": 0,
            "notes": _notes(notes),
            "created_at": int(time.time()),
        }

    async def _get_order(self, request: Request) -> JSONResponse:
        await self._record(request)
        if not self._authenticated(request):
            return self._unauthorized()
        order = self.orders.get(request.path_params["order_id"])
        if order is None:
            return _error(400, "The id provided does not exist", field="id")
        return JSONResponse(copy.deepcopy(order))

    async def _get_order_payments(self, request: Request) -> JSONResponse:
        await self._record(request)
        if not self._authenticated(request):
            return self._unauthorized()
        order_id = request.path_params["order_id"]
        if order_id not in self.orders:
            return _error(400, "The id provided does not exist", field="id")
        items = [copy.deepcopy(p) for p in self.payments.values() if p["order_id"] == order_id]
        return JSONResponse({"entity": "collection", "count": len(items), "items": items})

    async def _get_payment(self, request: Request) -> JSONResponse:
        await self._record(request)
        if not self._authenticated(request):
            return self._unauthorized()
        payment = self.payments.get(request.path_params["payment_id"])
        if payment is None:
            return _error(400, "The id provided does not exist", field="id")
        return JSONResponse(copy.deepcopy(payment))

    # -- the customer --

    def _order(self, order_id: str) -> dict[str, Any]:
        try:
            return self.orders[order_id]
        except KeyError:
            raise KeyError(
                f"FakeRazorpay has no order {order_id!r}: create it through the API first"
            ) from None

    def _payment_entity(self, order: dict[str, Any], payment_id: str, *, status: str) -> dict[str, Any]:
        failed = status == "failed"
        return {
            "id": payment_id,
            "entity": "payment",
            "amount": order["amount"],
            "currency": order["currency"],
            "status": status,
            "order_id": order["id"],
            "invoice_id": None,
            "international": False,
            "method": "upi",
            "amount_refunded": 0,
            "refund_status": None,
            "captured": status in ("captured", "refunded"),
            "description": None,
            "card_id": None,
            "bank": None,
            "wallet": None,
            "vpa": "gaurav.kumar@exampleupi",
            "email": "gaurav.kumar@example.com",
            "contact": "+919876543210",
            "notes": copy.deepcopy(order["notes"]),
            "fee": None if failed else 2,
            "tax": None if failed else 0,
            "error_code": "BAD_REQUEST_ERROR" if failed else None,
            "error_description": "Payment was unsuccessful as the payment was declined by the bank."
            if failed
            else None,
            "error_source": "customer" if failed else None,
            "error_step": "payment_authorization" if failed else None,
            "error_reason": "payment_failed" if failed else None,
            "acquirer_data": {
                "rrn": None if failed else "".join(secrets.choice(string.digits) for _ in range(12))
            },
            "created_at": int(time.time()),
        }

    def pay(self, order_id: str, *, payment_id: str | None = None) -> dict[str, str]:
        """The customer pays an order (auto-capture): returns the checkout handler result
        ``{razorpay_order_id, razorpay_payment_id, razorpay_signature}`` and marks the order paid."""
        order = self._order(order_id)
        payment_id = payment_id or new_id("pay")
        with self._lock:
            self.payments[payment_id] = self._payment_entity(order, payment_id, status="captured")
            order["attempts"] += 1
            order["amount_paid"] = order["amount"]
            order["amount_due"] = 0
            order["status"] = "paid"
        return {
            "razorpay_order_id": order_id,
            "razorpay_payment_id": payment_id,
            "razorpay_signature": payment_signature(order_id, payment_id, self.key_secret),
        }

    def _payment(self, order_id: str, payment_id: str | None, *, status: str = "captured") -> dict[str, Any]:
        order = self._order(order_id)
        if payment_id is None:
            paid = [p for p in self.payments.values() if p["order_id"] == order_id and p["status"] == status]
            payment_id = paid[-1]["id"] if paid else new_id("pay")
        if payment_id not in self.payments:
            with self._lock:
                self.payments[payment_id] = self._payment_entity(order, payment_id, status=status)
                order["attempts"] += 1
                if status == "failed":
                    if order["status"] == "created":
                        order["status"] = "attempted"
                else:
                    order.update(status="paid", amount_paid=order["amount"], amount_due=0)
        return copy.deepcopy(self.payments[payment_id])

    # -- webhooks --

    def envelope(self, event: str, payload: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``{"entity": "event", "account_id", "event", "contains", "payload": {name: {"entity": …}},
        "created_at"}``."""
        return {
            "entity": "event",
            "account_id": self.account_id,
            "event": event,
            "contains": list(payload),
            "payload": {name: {"entity": copy.deepcopy(entity)} for name, entity in payload.items()},
            "created_at": int(time.time()),
        }

    def payment_captured_event(self, order_id: str, payment_id: str | None = None) -> dict[str, Any]:
        """``payment.captured`` (contains ``["payment"]``); ``payment_id`` defaults to the order's
        paid payment."""
        return self.envelope("payment.captured", {"payment": self._payment(order_id, payment_id)})

    def order_paid_event(self, order_id: str, payment_id: str | None = None) -> dict[str, Any]:
        """``order.paid`` (contains ``["payment", "order"]``) with the order in its paid state."""
        payment = self._payment(order_id, payment_id)
        order = copy.deepcopy(self._order(order_id))
        order.update(
            status="paid", amount_paid=order["amount"], amount_due=0, attempts=max(order["attempts"], 1)
        )
        return self.envelope("order.paid", {"payment": payment, "order": order})

    def payment_failed_event(self, order_id: str, payment_id: str | None = None) -> dict[str, Any]:
        """``payment.failed`` (contains ``["payment"]``): a failed payment with Razorpay's error fields; the
        order becomes ``attempted``."""
        return self.envelope(
            "payment.failed", {"payment": self._payment(order_id, payment_id, status="failed")}
        )

    def refund_processed_event(self, payment_id: str, amount: int | None = None) -> dict[str, Any]:
        """``refund.processed`` (contains ``["refund", "payment"]``) refunding ``amount`` (default: the rest)
        of a known payment; the payment's ``amount_refunded``/``refund_status``/``status`` move on."""
        with self._lock:
            payment = self.payments[payment_id]
            remaining = payment["amount"] - payment["amount_refunded"]
            amount = remaining if amount is None else amount
            if not 0 < amount <= remaining:
                raise ValueError(f"cannot refund {amount} of {payment_id}: {remaining} left")
            payment["amount_refunded"] += amount
            full = payment["amount_refunded"] == payment["amount"]
            payment["refund_status"] = "full" if full else "partial"
            if full:
                payment["status"] = "refunded"
            refund = {
                "id": new_id("rfnd"),
                "entity": "refund",
                "amount": amount,
                "currency": payment["currency"],
                "payment_id": payment_id,
                "notes": [],
                "receipt": None,
                "acquirer_data": {"arn": None},
                "created_at": int(time.time()),
                "batch_id": None,
                "status": "processed",
                "speed_processed": "normal",
                "speed_requested": "normal",
            }
            payment_now = copy.deepcopy(payment)
        return self.envelope("refund.processed", {"refund": refund, "payment": payment_now})

    def dispute_event(
        self,
        action: str,
        payment_id: str,
        *,
        amount: int | None = None,
        phase: str = "chargeback",
        dispute_id: str | None = None,
    ) -> dict[str, Any]:
        """``payment.dispute.<action>`` (``created``, ``under_review``, ``action_required``, ``won``,
        ``lost``, ``closed``; contains ``["payment", "dispute"]``) about a known payment. The Dispute entity
        (``disp_…``; ``amount`` default: the whole payment) is kept per id, so later actions on the same
        ``dispute_id`` move the same dispute; ``amount_deducted`` is set when it is lost, as on Razorpay."""
        statuses = {
            "created": "open",
            "action_required": "open",
            "under_review": "under_review",
            "won": "won",
            "lost": "lost",
            "closed": "closed",
        }
        if action not in statuses:
            raise ValueError(f"unknown dispute action {action!r}")
        with self._lock:
            payment = self.payments[payment_id]
            dispute = self.disputes.get(dispute_id or "") or {
                "id": dispute_id or new_id("disp"),
                "entity": "dispute",
                "payment_id": payment_id,
                "amount": payment["amount"] if amount is None else amount,
                "currency": payment["currency"],
                "amount_deducted": 0,
                "reason_code": "chargeback",
                "reason_description": "The customer's bank raised a chargeback.",
                "respond_by": int(time.time()) + 7 * 86_400,
                "status": "open",
                "phase": phase,
                "created_at": int(time.time()),
                "evidence": {"amount": None, "summary": None, "submitted_at": None},
            }
            dispute.update(status=statuses[action], phase=phase)
            if action == "lost":
                dispute["amount_deducted"] = dispute["amount"]
            self.disputes[dispute["id"]] = dispute
            payload = {"payment": copy.deepcopy(payment), "dispute": copy.deepcopy(dispute)}
        return self.envelope(f"payment.dispute.{action}", payload)

    def deliver(
        self, event: dict[str, Any], *, event_id: str | None = None, secret: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of one delivery: serialized once, ``X-Razorpay-Signature`` over those exact bytes,
        ``x-razorpay-event-id`` (re-use ``event_id`` to simulate a redelivery)."""
        body = json.dumps(event).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "X-Razorpay-Signature": webhook_signature(body, secret or self.webhook_secret),
            "x-razorpay-event-id": event_id or "".join(secrets.choice(_ALPHANUMERIC) for _ in range(14)),
            "User-Agent": "Razorpay-Webhook/v1",
        }
        return body, headers

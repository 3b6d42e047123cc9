"""A fake Stripe speaking Stripe's real v1 contracts (providers.md §0 and §3, API ``2026-10-28.endive``).

Routes registered on the respx router (the ``stripe`` SDK with ``stripe.HTTPXClient()`` goes through httpx):

* ``POST {api_base}/v1/checkout/sessions`` — auth (Bearer or Basic ``sk:``), **form-encoded** bracket params,
  Stripe's validation errors, ``Idempotency-Key`` semantics, a Checkout Session object and a ``Request-Id``
  header.
* ``GET {api_base}/v1/checkout/sessions/{id}``, ``GET {api_base}/v1/checkout/sessions`` (the list, filters
  ``payment_intent``, ``subscription``, ``customer``, ``status``; newest first; unknown parameters refused)
  and ``GET {api_base}/v1/subscriptions/{id}``.
* ``GET {api_base}/v1/invoice_payments`` (the Invoice Payments API: filters ``invoice``,
  ``payment[type]`` + ``payment[payment_intent]`` / ``payment[payment_record]``, ``status``; ``limit`` and
  ``starting_after`` pagination, newest first; unknown parameters refused as on Stripe) and
  ``GET {api_base}/v1/invoice_payments/{id}``. :meth:`FakeStripe.invoice_paid` records the invoice payment
  that paid the invoice (Stripe's ``invoice.paid`` payload itself names no payment intent).

Event builders return whole Event dicts; :meth:`FakeStripe.deliver` serializes one **once** and signs it the
way Stripe does (``Stripe-Signature: t=…,v1=…``). State the events imply (a completed session, a subscription
created by checkout, a subscription's new period) is written back to :attr:`FakeStripe.sessions` /
:attr:`FakeStripe.subscriptions`, so re-fetching through the API sees what a real account would.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import respx
import stripe
from stripe.params._invoice_payment_list_params import (
    InvoicePaymentListParams,
    InvoicePaymentListParamsPayment,
)
from stripe.params.checkout._session_create_params import (
    SessionCreateParams,
    SessionCreateParamsLineItem,
    SessionCreateParamsLineItemPriceData,
)
from stripe.params.checkout._session_create_params import (
    SessionCreateParamsLineItemPriceDataProductData as ProductDataParams,
)
from stripe.params.checkout._session_list_params import SessionListParams

API_VERSION = "2026-10-28.endive"
WEBHOOK_USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
_ALPHANUMERIC = string.ascii_letters + string.digits
_DAY = 86_400
_PERIOD = 30 * _DAY
_EMBEDDED_UI_MODES = {"embedded_page", "elements", "embedded", "custom", "form"}
_MODES = ("payment", "setup", "subscription")
_REQUEST_OPTIONS = set(stripe.RequestOptions.__annotations__)
# The parameters Stripe accepts, straight from the SDK's TypedDicts: anything else is `parameter_unknown`.
_SESSION_PARAMS = set(SessionCreateParams.__annotations__) - _REQUEST_OPTIONS
_LINE_ITEM_PARAMS = set(SessionCreateParamsLineItem.__annotations__)
_PRICE_DATA_PARAMS = set(SessionCreateParamsLineItemPriceData.__annotations__)
_PRODUCT_DATA_PARAMS = set(ProductDataParams.__annotations__)
_INVOICE_PAYMENT_LIST_PARAMS = set(InvoicePaymentListParams.__annotations__) - _REQUEST_OPTIONS
_SESSION_LIST_PARAMS = set(SessionListParams.__annotations__) - _REQUEST_OPTIONS
_INVOICE_PAYMENT_PAYMENT_PARAMS = set(InvoicePaymentListParamsPayment.__annotations__)
_INVOICE_PAYMENT_TYPES = ("payment_intent", "payment_record")
_INVOICE_PAYMENT_STATUSES = ("canceled", "open", "paid")
# Parameters only some modes accept.
_MODE_ONLY = {
    "payment_intent_data": ("payment",),
    "customer_creation": ("payment", "setup"),
    "invoice_creation": ("payment",),
    "subscription_data": ("subscription",),
    "setup_intent_data": ("setup",),
}


def _token(length: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking object id, e.g. ``new_id("evt")`` → ``evt_1Q…``."""
    return f"{prefix}_1{_token(length - 1)}"


def _request_id() -> str:
    return "req_" + _token(14)


# -- form encoding ------------------------------------------------------------------------------------


_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_form(body: bytes | str) -> dict[str, Any]:
    """Decode Stripe's form encoding (``line_items[0][price_data][currency]=usd``) into nested dicts/lists.

    Keys whose children are all indices become lists (``[]`` appends); every leaf stays a string, as on the
    wire (``"true"``, ``"1999"``). Children of ``metadata`` are always a dict, even with numeric keys."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        tokens = [match.group(1), *_BRACKETS.findall(match.group(2))] if match else [key]
        node = root
        for token in tokens[:-1]:
            child = node.get(token or str(len(node)))
            if not isinstance(child, dict):
                child = {}
                node[token or str(len(node))] = child
            node = child
        node[tokens[-1] or str(len(node))] = value
    result: dict[str, Any] = _listify(root, parent="")
    return result


def _listify(node: Any, parent: str) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value, key) for key, value in node.items()}
    if parent != "metadata" and converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


# -- errors -------------------------------------------------------------------------------------------


class StripeInvalidRequest(Exception):
    """A 4xx Stripe error raised while validating a request; turned into Stripe's error JSON."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.error_type = error_type

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.error_type}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": error}


def _missing(param: str) -> StripeInvalidRequest:
    return StripeInvalidRequest(f"Missing required param: {param}.", param=param, code="parameter_missing")


def _no_such(kind: str, object_id: str) -> StripeInvalidRequest:
    return StripeInvalidRequest(
        f"No such {kind}: '{object_id}'", param="id", code="resource_missing", status=404
    )


_FAILURES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", None, "Invalid API Key provided."),
    402: ("card_error", "card_declined", "Your card was declined."),
    403: ("invalid_request_error", None, "The provided key does not have the required permissions."),
    404: ("invalid_request_error", "resource_missing", "No such object."),
    409: ("invalid_request_error", "lock_timeout", "This object cannot be accessed right now."),
    429: (
        "invalid_request_error",
        "rate_limit",
        "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
    ),
}


def _integer(value: Any, param: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise StripeInvalidRequest(f"Invalid integer: {value}", param=param, code="parameter_invalid_integer")


def _boolean(value: Any, param: str) -> bool:
    if value in ("true", "false"):
        return bool(value == "true")
    raise StripeInvalidRequest(f"Invalid boolean: {value}", param=param)


def _reject_unknown(params: dict[str, Any], known: set[str], prefix: str = "") -> None:
    for key in params:
        if key not in known:
            name = f"{prefix}[{key}]" if prefix else key
            raise StripeInvalidRequest(
                f"Received unknown parameter: {name}", param=name, code="parameter_unknown"
            )


def _mapping(value: Any, param: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if value == "":  # `param=` unsets an object parameter
        return {}
    raise StripeInvalidRequest(f"Invalid object: {param} must be a hash", param=param)


# -- recorded traffic ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StripeRequest:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, Any]
    idempotency_key: str | None


@dataclass
class _Failure:
    status: int | None  # None: time out
    created: bool = False  # time out after the session was created (the response got lost)
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class _IdempotentResult:
    fingerprint: tuple[str, str, str]
    status: int
    body: dict[str, Any]


class FakeStripe:
    def __init__(
        self,
        router: respx.MockRouter,
        api_base: str = "https://api.stripe.com",
        secret_key: str = "sk_test_fake",  # noqa: S107
        webhook_secret: str = "whsec_test_fake",  # noqa: S107
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        self.sessions: dict[str, dict[str, Any]] = {}
        """Every created session by id, kept current by the event builders (``checkout_completed`` …)."""
        self.session_params: dict[str, dict[str, Any]] = {}
        """The decoded create params of each session (``line_items``, ``subscription_data`` …)."""
        self.subscriptions: dict[str, dict[str, Any]] = {}
        """Served by ``GET /v1/subscriptions/{id}``; seed with :meth:`add_subscription`."""
        self.prices: dict[str, dict[str, Any]] = {}
        """Price ids line items may reference: ``{"price_x": {"unit_amount": 999, "currency": "usd",
        "recurring": {"interval": "month"} | None, "product": "prod_x"}}``; unknown ids answer 404-ish 400."""
        self.disputes: dict[str, dict[str, Any]] = {}
        """Disputes made with :meth:`dispute`, kept current by :meth:`dispute_event`."""
        self.invoices: dict[str, dict[str, Any]] = {}
        """Invoices made by :meth:`invoice_paid`, served by ``GET /v1/invoices/{id}``."""
        self.invoice_payments: dict[str, dict[str, Any]] = {}
        """InvoicePayment objects (``inpay_…``) by id, in creation order; made by :meth:`invoice_paid` or
        :meth:`add_invoice_payment`, served by ``GET /v1/invoice_payments``."""
        self.charges: dict[str, str] = {}
        """The charge (``ch_…``) of each payment intent, so every refund and dispute of one payment intent
        names the same charge, as on Stripe."""
        self.requests: list[StripeRequest] = []
        self._idempotency: dict[str, _IdempotentResult] = {}
        self._failures: list[_Failure] = []
        self._invoice_payment_failures: list[_Failure] = []
        self._session_list_failures: list[_Failure] = []
        base = re.escape(self.api_base)
        router.post(f"{self.api_base}/v1/checkout/sessions").mock(side_effect=self._create_session)
        router.get(url__regex=rf"^{base}/v1/checkout/sessions(\?.*)?$").mock(side_effect=self._list_sessions)
        router.get(url__regex=rf"^{base}/v1/checkout/sessions/(?P<session_id>[^/?]+)(\?.*)?$").mock(
            side_effect=self._retrieve_session
        )
        router.get(url__regex=rf"^{base}/v1/subscriptions/(?P<subscription_id>[^/?]+)(\?.*)?$").mock(
            side_effect=self._retrieve_subscription
        )
        router.get(url__regex=rf"^{base}/v1/invoices/(?P<invoice_id>[^/?]+)(\?.*)?$").mock(
            side_effect=self._retrieve_invoice
        )
        router.get(url__regex=rf"^{base}/v1/invoice_payments(\?.*)?$").mock(
            side_effect=self._list_invoice_payments
        )
        router.get(url__regex=rf"^{base}/v1/invoice_payments/(?P<invoice_payment_id>[^/?]+)(\?.*)?$").mock(
            side_effect=self._retrieve_invoice_payment
        )

    # -- switches --

    def fail_next(self, status: int = 500, *, code: str | None = None, message: str | None = None) -> None:
        """The next session create answers ``status`` with Stripe's error JSON (calls queue up).

        As on Stripe, a 5xx is stored under the request's ``Idempotency-Key`` (a retry with that key replays
        the same 500); a 429 is not (the rate limiter runs before the idempotency layer)."""
        self._failures.append(_Failure(status, code=code, message=message))

    def timeout_next(self, *, created: bool = False) -> None:
        """The next session create raises ``httpx.ReadTimeout`` (the SDK raises ``APIConnectionError``).

        ``created=True``: Stripe created the session but the response was lost; a retry with the same
        ``Idempotency-Key`` gets that session back."""
        self._failures.append(_Failure(None, created=created))

    def fail_invoice_payments_next(
        self, status: int | None = 500, *, code: str | None = None, message: str | None = None
    ) -> None:
        """The next ``GET /v1/invoice_payments`` (list or retrieve) answers ``status`` with Stripe's error
        JSON, or times out (``httpx.ReadTimeout``) when ``status`` is None; calls queue up."""
        self._invoice_payment_failures.append(_Failure(status, code=code, message=message))

    def fail_session_list_next(self, status: int | None = 500) -> None:
        """The next ``GET /v1/checkout/sessions`` (the list) answers ``status`` with Stripe's error JSON, or
        times out (``httpx.ReadTimeout``) when ``status`` is None; calls queue up."""
        self._session_list_failures.append(_Failure(status))

    # -- prices and subscriptions --

    def add_price(
        self,
        price_id: str,
        unit_amount: int,
        currency: str = "usd",
        *,
        interval: str | None = None,
        product: str | None = None,
    ) -> None:
        self.prices[price_id] = {
            "unit_amount": unit_amount,
            "currency": currency,
            "recurring": {"interval": interval, "interval_count": 1} if interval else None,
            "product": product or new_id("prod", 14),
        }

    def add_subscription(
        self,
        subscription_id: str | None = None,
        *,
        customer: str | None = None,
        status: str = "active",
        metadata: Mapping[str, str] | None = None,
        cancel_at_period_end: bool = False,
        current_period_start: int | None = None,
        current_period_end: int | None = None,
        price: str = "price_1Pro",
        unit_amount: int = 999,
        currency: str = "usd",
        interval: str = "month",
    ) -> dict[str, Any]:
        """Store (and return) a Subscription object served by ``GET /v1/subscriptions/{id}``."""
        subscription = subscription_object(
            subscription_id or new_id("sub"),
            customer=customer or new_id("cus", 14),
            status=status,
            metadata=metadata,
            cancel_at_period_end=cancel_at_period_end,
            current_period_start=current_period_start,
            current_period_end=current_period_end,
            price=price,
            unit_amount=unit_amount,
            currency=currency,
            interval=interval,
        )
        self.subscriptions[subscription["id"]] = subscription
        return subscription

    # -- charges and invoice payments --

    def charge_of(self, payment_intent: str) -> str:
        """The charge of a payment intent (made on first use)."""
        return self.charges.setdefault(payment_intent, new_id("ch"))

    def add_invoice_payment(
        self,
        invoice_id: str,
        amount: int,
        currency: str = "usd",
        *,
        payment_intent: str | None = None,
        status: str = "paid",
        is_default: bool = True,
    ) -> dict[str, Any]:
        """Store (and return) an InvoicePayment: ``payment_intent`` (default: a new one) paid ``amount`` of
        ``invoice_id`` (``amount_paid`` is null until ``status`` is ``paid``, as on Stripe)."""
        now = int(time.time())
        payment = {
            "id": new_id("inpay"),
            "object": "invoice_payment",
            "amount_paid": amount if status == "paid" else None,
            "amount_requested": amount,
            "created": now,
            "currency": currency,
            "invoice": invoice_id,
            "is_default": is_default,
            "livemode": False,
            "payment": {"type": "payment_intent", "payment_intent": payment_intent or new_id("pi")},
            "status": status,
            "status_transitions": {
                "canceled_at": now if status == "canceled" else None,
                "paid_at": now if status == "paid" else None,
            },
        }
        self.invoice_payments[payment["id"]] = payment
        return copy.deepcopy(payment)

    def payment_intent_of(self, invoice_id: str) -> str:
        """The payment intent of the (latest) payment of an invoice made by :meth:`invoice_paid`."""
        for payment in reversed(self.invoice_payments.values()):
            if payment["invoice"] == invoice_id:
                return str(payment["payment"]["payment_intent"])
        raise KeyError(invoice_id)

    def _list_invoice_payments(self, request: httpx.Request) -> httpx.Response:
        params = parse_form(request.url.query)
        self._record(request, params)
        unauthenticated = self._authenticate(request)
        if unauthenticated is not None:
            return self._error(unauthenticated)
        failed = self._invoice_payment_failure(request)
        if failed is not None:
            return failed
        try:
            found, limit, has_more = self._select_invoice_payments(params)
        except StripeInvalidRequest as invalid:
            return self._error(invalid)
        return self._respond(
            200,
            {
                "object": "list",
                "data": copy.deepcopy(found[:limit]),
                "has_more": has_more,
                "url": "/v1/invoice_payments",
            },
        )

    def _select_invoice_payments(self, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int, bool]:
        _reject_unknown(params, _INVOICE_PAYMENT_LIST_PARAMS)
        limit = _integer(params.get("limit", "10"), "limit")
        if not 1 <= limit <= 100:
            raise StripeInvalidRequest(
                f"Invalid integer: {limit}. This value must be between 1 and 100.", param="limit"
            )
        found = list(reversed(self.invoice_payments.values()))  # newest first
        if "invoice" in params:
            found = [p for p in found if p["invoice"] == params["invoice"]]
        if "status" in params:
            if params["status"] not in _INVOICE_PAYMENT_STATUSES:
                raise StripeInvalidRequest(
                    f"Invalid status: must be one of {', '.join(_INVOICE_PAYMENT_STATUSES)}", param="status"
                )
            found = [p for p in found if p["status"] == params["status"]]
        if "payment" in params:
            payment = _mapping(params["payment"], "payment")
            _reject_unknown(payment, _INVOICE_PAYMENT_PAYMENT_PARAMS, "payment")
            kind = payment.get("type")
            if not kind:
                raise _missing("payment[type]")
            if kind not in _INVOICE_PAYMENT_TYPES:
                raise StripeInvalidRequest(
                    f"Invalid payment[type]: must be one of {', '.join(_INVOICE_PAYMENT_TYPES)}",
                    param="payment[type]",
                )
            found = [p for p in found if p["payment"]["type"] == kind]
            if kind in payment:
                found = [p for p in found if p["payment"].get(kind) == payment[kind]]
        if "starting_after" in params:
            ids = [p["id"] for p in found]
            if params["starting_after"] not in self.invoice_payments:
                raise _no_such("invoice_payment", params["starting_after"])
            if params["starting_after"] in ids:
                found = found[ids.index(params["starting_after"]) + 1 :]
        return found, limit, len(found) > limit

    def _retrieve_invoice(self, request: httpx.Request, invoice_id: str) -> httpx.Response:
        return self._retrieve_stored(request, self.invoices, "invoice", invoice_id)

    def _retrieve_invoice_payment(self, request: httpx.Request, invoice_payment_id: str) -> httpx.Response:
        return self._retrieve_stored(request, self.invoice_payments, "invoice_payment", invoice_payment_id)

    def _retrieve_stored(
        self, request: httpx.Request, stored: dict[str, dict[str, Any]], kind: str, object_id: str
    ) -> httpx.Response:
        """GET of one invoice or invoice payment (failures queued by fail_invoice_payments_next)."""
        self._record(request, parse_form(request.url.query))
        unauthenticated = self._authenticate(request)
        if unauthenticated is not None:
            return self._error(unauthenticated)
        failed = self._invoice_payment_failure(request)
        if failed is not None:
            return failed
        found = stored.get(object_id)
        if found is None:
            return self._error(_no_such(kind, object_id))
        return self._respond(200, copy.deepcopy(found))

    def _invoice_payment_failure(self, request: httpx.Request) -> httpx.Response | None:
        if not self._invoice_payment_failures:
            return None
        failure = self._invoice_payment_failures.pop(0)
        if failure.status is None:
            raise httpx.ReadTimeout("The read operation timed out", request=request)
        return self._failure(failure, None, ("GET", request.url.path, ""))

    # -- HTTP plumbing --

    def _respond(
        self, status: int, body: dict[str, Any], *, request_id: str | None = None, **headers: str
    ) -> httpx.Response:
        headers = {"Request-Id": request_id or _request_id(), **headers}
        return httpx.Response(status, json=body, headers=headers)

    def _error(self, failure: StripeInvalidRequest) -> httpx.Response:
        request_id = _request_id()
        return self._respond(failure.status, failure.body(request_id), request_id=request_id)

    def _authenticate(self, request: httpx.Request) -> StripeInvalidRequest | None:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                credential = base64.b64decode(credential).decode().partition(":")[0]
            except (ValueError, UnicodeDecodeError):
                credential = ""
        elif scheme.lower() != "bearer":
            credential = ""
        if not credential:
            return StripeInvalidRequest(
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#"
                "authentication for details, or we can help at https://support.stripe.com/.",
                status=401,
            )
        if not hmac.compare_digest(credential, self.secret_key):
            prefix = credential[:8] if credential.startswith(("sk_", "rk_", "pk_")) else ""
            masked = prefix + "*" * max(len(credential) - len(prefix) - 4, 0) + credential[-4:]
            return StripeInvalidRequest(f"Invalid API Key provided: {masked}", status=401)
        return None

    def _record(self, request: httpx.Request, params: dict[str, Any]) -> None:
        self.requests.append(
            StripeRequest(
                method=request.method,
                path=request.url.path,
                headers=dict(request.headers),
                params=params,
                idempotency_key=request.headers.get("idempotency-key"),
            )
        )

    # -- POST /v1/checkout/sessions --

    def _create_session(self, request: httpx.Request) -> httpx.Response:
        content_type = request.headers.get("content-type", "")
        # Stripe's v1 API only reads form bodies: a JSON body is "no params at all".
        params = parse_form(request.content) if content_type.startswith("application/x-www-form") else {}
        self._record(request, params)
        unauthenticated = self._authenticate(request)
        if unauthenticated is not None:
            return self._error(unauthenticated)

        key = request.headers.get("idempotency-key")
        fingerprint = ("POST", request.url.path, json.dumps(params, sort_keys=True))
        if key is not None and key in self._idempotency:
            stored = self._idempotency[key]
            if stored.fingerprint != fingerprint:
                return self._error(
                    StripeInvalidRequest(
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request.",
                        error_type="idempotency_error",
                    )
                )
            return self._respond(
                stored.status,
                copy.deepcopy(stored.body),
                **{"Idempotent-Replayed": "true", "Idempotency-Key": key},
            )

        failure = self._failures.pop(0) if self._failures else None
        if failure is not None and failure.status is not None:
            return self._failure(failure, key, fingerprint)
        if failure is not None and not failure.created:
            raise httpx.ReadTimeout("The read operation timed out", request=request)

        try:
            session = self._build_session(params)
        except StripeInvalidRequest as invalid:
            return self._error(invalid)  # validation errors are not stored under the idempotency key
        self.sessions[session["id"]] = session
        self.session_params[session["id"]] = params
        if key is not None:
            self._idempotency[key] = _IdempotentResult(fingerprint, 200, copy.deepcopy(session))
        if failure is not None:  # time out after the fact: the session exists, the response is lost
            raise httpx.ReadTimeout("The read operation timed out", request=request)
        headers = {"Idempotency-Key": key} if key is not None else {}
        return self._respond(200, copy.deepcopy(session), **headers)

    def _failure(
        self, failure: _Failure, key: str | None, fingerprint: tuple[str, str, str]
    ) -> httpx.Response:
        assert failure.status is not None
        error_type, code, message = _FAILURES.get(
            failure.status, ("api_error", None, "An unknown error occurred")
        )
        error = StripeInvalidRequest(
            failure.message or message,
            code=failure.code or code,
            status=failure.status,
            error_type=error_type,
        )
        request_id = _request_id()
        body = error.body(request_id)
        if key is not None and failure.status >= 500:
            self._idempotency[key] = _IdempotentResult(fingerprint, failure.status, body)
        return self._respond(failure.status, body, request_id=request_id)

    def _build_session(self, params: dict[str, Any]) -> dict[str, Any]:
        _reject_unknown(params, _SESSION_PARAMS)
        mode = params.get("mode")
        if not mode:
            raise _missing("mode")
        if mode not in _MODES:
            raise StripeInvalidRequest(
                f"Invalid mode: must be one of {', '.join(_MODES[:-1])}, or {_MODES[-1]}", param="mode"
            )
        ui_mode = params.get("ui_mode", "hosted_page")
        embedded = ui_mode in _EMBEDDED_UI_MODES
        if embedded:
            if "success_url" in params:
                raise StripeInvalidRequest(
                    f"You cannot specify `success_url` when `ui_mode` is `{ui_mode}`.", param="success_url"
                )
            if "return_url" not in params and params.get("redirect_on_completion") != "never":
                raise _missing("return_url")
        elif not params.get("success_url"):
            raise _missing("success_url")
        for name, modes in _MODE_ONLY.items():
            if name in params and mode not in modes:
                raise StripeInvalidRequest(
                    f"You can only pass `{name}` in `{'` or `'.join(modes)}` mode.", param=name
                )
        if params.get("customer") and params.get("customer_email"):
            raise StripeInvalidRequest(
                "You may only specify one of these parameters: customer, customer_email.",
                param="customer_email",
            )

        line_items = params.get("line_items")
        if mode in ("payment", "subscription") and not line_items:
            raise _missing("line_items")
        if line_items is not None and not isinstance(line_items, list):
            raise StripeInvalidRequest("Invalid array", param="line_items")
        amount, currency, recurring = self._price_line_items(line_items or [])
        if mode == "subscription" and not recurring:
            raise StripeInvalidRequest(
                "You must provide at least one recurring price in `subscription` mode when using prices.",
                param="line_items",
            )
        if mode == "payment" and recurring:
            raise StripeInvalidRequest(
                "You specified `payment` mode but passed a recurring price. Either switch to `subscription` "
                "mode or use only one-time prices.",
                param="line_items",
            )

        metadata = _mapping(params.get("metadata", {}), "metadata")
        _check_metadata(metadata)
        client_reference_id = params.get("client_reference_id")
        if client_reference_id is not None and len(client_reference_id) > 200:
            raise StripeInvalidRequest(
                "Invalid string: client_reference_id must be at most 200 characters",
                param="client_reference_id",
            )
        automatic_tax = _mapping(params.get("automatic_tax", {}), "automatic_tax")
        tax_enabled = _boolean(automatic_tax["enabled"], "automatic_tax[enabled]") if automatic_tax else False
        tax_id_collection = _mapping(params.get("tax_id_collection", {}), "tax_id_collection")
        tax_ids_enabled = (
            _boolean(tax_id_collection["enabled"], "tax_id_collection[enabled]")
            if tax_id_collection
            else False
        )
        liability = _mapping(automatic_tax.get("liability", {"type": "self"}), "automatic_tax[liability]")

        created = int(time.time())
        session_id = "cs_test_a1" + _token(56)
        return {
            "id": session_id,
            "object": "checkout.session",
            "adaptive_pricing": {"enabled": False},
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": amount,
            "amount_total": amount,
            "automatic_tax": {
                "enabled": tax_enabled,
                "liability": liability if tax_enabled else None,
                "provider": "stripe" if tax_enabled else None,
                "status": "requires_location_inputs" if tax_enabled else None,
            },
            "billing_address_collection": params.get("billing_address_collection"),
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": client_reference_id,
            "client_secret": f"{session_id}_secret_{_token(24)}" if embedded else None,
            "collected_information": None,
            "consent": None,
            "consent_collection": None,
            "created": created,
            "currency": currency,
            "currency_conversion": None,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": params.get("customer"),
            "customer_account": None,
            "customer_creation": params.get("customer_creation", "if_required")
            if mode != "subscription"
            else None,
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "discounts": [],
            "expires_at": _integer(params["expires_at"], "expires_at")
            if "expires_at" in params
            else created + _DAY,
            "integration_identifier": None,
            "invoice": None,
            "invoice_creation": {
                "enabled": False,
                "invoice_data": {
                    "account_tax_ids": None,
                    "custom_fields": None,
                    "description": None,
                    "footer": None,
                    "issuer": None,
                    "metadata": {},
                    "rendering_options": None,
                },
            }
            if mode == "payment"
            else None,
            "livemode": False,
            "locale": params.get("locale"),
            "managed_payments": {"enabled": False},
            "metadata": metadata,
            "mode": mode,
            "origin_context": None,
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": "always" if mode == "subscription" else None,
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
            "permissions": None,
            "phone_number_collection": {"enabled": False},
            "recovered_from": None,
            "return_url": params.get("return_url"),
            "saved_payment_method_options": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": "open",
            "submit_type": params.get("submit_type"),
            "subscription": None,
            "success_url": params.get("success_url"),
            "tax_id_collection": {
                "enabled": tax_ids_enabled,
                "required": tax_id_collection.get("required", "never"),
            },
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": ui_mode,
            "url": None if embedded else f"https://checkout.stripe.com/c/pay/{session_id}",
            "wallet_options": None,
        }

    def _price_line_items(self, line_items: list[Any]) -> tuple[int, str | None, bool]:
        """(amount_total, currency, has_recurring) from ``price_data`` / known ``price`` ids."""
        total = 0
        currencies: set[str] = set()
        recurring = False
        for index, item in enumerate(line_items):
            where = f"line_items[{index}]"
            item = _mapping(item, where)
            _reject_unknown(item, _LINE_ITEM_PARAMS, where)
            if "quantity" not in item:
                raise _missing(f"{where}[quantity]")
            quantity = _integer(item["quantity"], f"{where}[quantity]")
            if quantity < 1:
                raise StripeInvalidRequest(
                    f"This value must be greater than or equal to 1 (it currently is '{quantity}').",
                    param=f"{where}[quantity]",
                )
            if "price" in item and "price_data" in item:
                raise StripeInvalidRequest(
                    "You may only specify one of these parameters: price, price_data.",
                    param=f"{where}[price]",
                )
            if "price" in item:
                price = self.prices.get(item["price"])
                if price is None:
                    raise StripeInvalidRequest(
                        f"No such price: '{item['price']}'", param=f"{where}[price]", code="resource_missing"
                    )
                unit_amount, currency, is_recurring = (
                    price["unit_amount"],
                    price["currency"],
                    bool(price.get("recurring")),
                )
            elif "price_data" in item:
                data = _mapping(item["price_data"], f"{where}[price_data]")
                _reject_unknown(data, _PRICE_DATA_PARAMS, f"{where}[price_data]")
                if isinstance(data.get("product_data"), dict):
                    _reject_unknown(
                        data["product_data"], _PRODUCT_DATA_PARAMS, f"{where}[price_data][product_data]"
                    )
                if not data.get("currency"):
                    raise _missing(f"{where}[price_data][currency]")
                if "product" not in data and "product_data" not in data:
                    raise _missing(f"{where}[price_data][product_data]")
                if "product_data" in data and not _mapping(
                    data["product_data"], f"{where}[price_data][product_data]"
                ).get("name"):
                    raise _missing(f"{where}[price_data][product_data][name]")
                if "unit_amount" in data:
                    unit_amount = _integer(data["unit_amount"], f"{where}[price_data][unit_amount]")
                elif "unit_amount_decimal" in data:
                    unit_amount = round(float(data["unit_amount_decimal"]))
                else:
                    raise _missing(f"{where}[price_data][unit_amount]")
                currency = data["currency"]
                is_recurring = "recurring" in data
                if is_recurring and not _mapping(data["recurring"], f"{where}[price_data][recurring]").get(
                    "interval"
                ):
                    raise _missing(f"{where}[price_data][recurring][interval]")
            else:
                raise StripeInvalidRequest(
                    "You must specify either `price` or `price_data` in each line item.",
                    param=f"{where}[price]",
                )
            total += unit_amount * quantity
            currencies.add(currency.lower())
            recurring = recurring or is_recurring
        if len(currencies) > 1:
            raise StripeInvalidRequest("All line items must use the same currency.", param="line_items")
        return total, (currencies.pop() if currencies else None), recurring

    # -- GET routes --

    def _retrieve_session(self, request: httpx.Request, session_id: str) -> httpx.Response:
        self._record(request, parse_form(request.url.query))
        unauthenticated = self._authenticate(request)
        if unauthenticated is not None:
            return self._error(unauthenticated)
        session = self.sessions.get(session_id)
        if session is None:
            return self._error(_no_such("checkout.session", session_id))
        body = copy.deepcopy(session)
        expand = parse_form(request.url.query).get("expand") or []
        if "line_items" in expand:
            body["line_items"] = self._line_items_list(session_id)
        return self._respond(200, body)

    def _list_sessions(self, request: httpx.Request) -> httpx.Response:
        params = parse_form(request.url.query)
        self._record(request, params)
        unauthenticated = self._authenticate(request)
        if unauthenticated is not None:
            return self._error(unauthenticated)
        if self._session_list_failures:
            failure = self._session_list_failures.pop(0)
            if failure.status is None:
                raise httpx.ReadTimeout("The read operation timed out", request=request)
            return self._failure(failure, None, ("GET", request.url.path, ""))
        try:
            _reject_unknown(params, _SESSION_LIST_PARAMS)
            limit = _integer(params.get("limit", "10"), "limit")
        except StripeInvalidRequest as invalid:
            return self._error(invalid)
        if not 1 <= limit <= 100:
            return self._error(
                StripeInvalidRequest(
                    f"Invalid integer: {limit}. This value must be between 1 and 100.", param="limit"
                )
            )
        found = list(reversed(self.sessions.values()))  # newest first
        for name in ("payment_intent", "subscription", "customer", "status"):
            if name in params:
                found = [session for session in found if session.get(name) == params[name]]
        return self._respond(
            200,
            {
                "object": "list",
                "data": copy.deepcopy(found[:limit]),
                "has_more": len(found) > limit,
                "url": "/v1/checkout/sessions",
            },
        )

    def payment_intent_metadata(self, payment_intent: str) -> dict[str, str]:
        """The metadata a Checkout Session gave its payment intent (``payment_intent_data[metadata]``),
        which Stripe copies onto the payment intent's charges; empty for a payment intent no session
        made."""
        for session_id, session in self.sessions.items():
            if session.get("payment_intent") == payment_intent:
                intent_data = self.session_params.get(session_id, {}).get("payment_intent_data") or {}
                return dict(intent_data.get("metadata") or {})
        return {}

    def _line_items_list(self, session_id: str) -> dict[str, Any]:
        items = []
        for item in self.session_params.get(session_id, {}).get("line_items", []):
            data = item.get("price_data", {})
            price = self.prices.get(item.get("price", ""), {})
            unit_amount = int(data.get("unit_amount", price.get("unit_amount", 0)))
            quantity = int(item["quantity"])
            items.append(
                {
                    "id": new_id("li"),
                    "object": "item",
                    "amount_subtotal": unit_amount * quantity,
                    "amount_total": unit_amount * quantity,
                    "currency": data.get("currency", price.get("currency")),
                    "description": data.get("product_data", {}).get("name"),
                    "quantity": quantity,
                }
            )
        return {
            "object": "list",
            "data": items,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{session_id}/line_items",
        }

    def _retrieve_subscription(self, request: httpx.Request, subscription_id: str) -> httpx.Response:
        self._record(request, parse_form(request.url.query))
        unauthenticated = self._authenticate(request)
        if unauthenticated is not None:
            return self._error(unauthenticated)
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            return self._error(_no_such("subscription", subscription_id))
        return self._respond(200, copy.deepcopy(subscription))

    # -- events --

    def event(
        self,
        event_type: str,
        data_object: dict[str, Any],
        *,
        previous_attributes: dict[str, Any] | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        created: int | None = None,
    ) -> dict[str, Any]:
        """A whole Event around ``data_object`` (a deep copy)."""
        data: dict[str, Any] = {"object": copy.deepcopy(data_object)}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        return {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()) if created is None else created,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": request_id, "idempotency_key": idempotency_key},
            "type": event_type,
        }

    def _session(self, session: dict[str, Any] | str) -> dict[str, Any]:
        if isinstance(session, str):
            return copy.deepcopy(self.sessions[session])
        return copy.deepcopy(dict(session))

    def checkout_completed(
        self,
        session: dict[str, Any] | str,
        *,
        payment_status: str = "paid",
        customer_details: dict[str, Any] | None = None,
        customer: str | None = None,
        amount_tax: int = 0,
    ) -> dict[str, Any]:
        """``checkout.session.completed`` for a session (dict or id): ``status`` complete, ``payment_status``
        (``unpaid`` for delayed methods), a customer, ``customer_details`` (default from the session's
        email, country US, no tax ids; a dict given here is merged over that, ``address`` key by key — see
        :func:`customer_details`), ``payment_intent`` (payment mode) or ``subscription`` + ``invoice``
        (subscription mode, the subscription is stored with ``subscription_data[metadata]``)."""
        completed = self._session(session)
        session_id = completed["id"]
        completed["status"] = "complete"
        completed["payment_status"] = payment_status
        completed["customer"] = completed.get("customer") or customer or new_id("cus", 14)
        details = build_customer_details(email=completed.get("customer_email") or "jane@example.com")
        if customer_details:
            address = {**details["address"], **customer_details.get("address", {})}
            details = {**details, **customer_details, "address": address}
        completed["customer_details"] = details
        completed["url"] = None
        if completed.get("automatic_tax", {}).get("enabled"):
            completed["automatic_tax"]["status"] = "complete"
            completed["total_details"]["amount_tax"] = amount_tax
            completed["amount_total"] = (completed.get("amount_subtotal") or 0) + amount_tax
        if completed["mode"] == "payment":
            completed["payment_intent"] = completed.get("payment_intent") or new_id("pi")
        elif completed["mode"] == "subscription":
            completed["invoice"] = completed.get("invoice") or new_id("in")
            if not completed.get("subscription"):
                completed["subscription"] = self._subscribe(completed)
        if session_id in self.sessions:
            self.sessions[session_id] = copy.deepcopy(completed)
        return self.event("checkout.session.completed", completed)

    def _subscribe(self, session: dict[str, Any]) -> str:
        params = self.session_params.get(session["id"], {})
        subscription_data = params.get("subscription_data") or {}
        item = (params.get("line_items") or [{}])[0]
        price_data = item.get("price_data") or {}
        known_price = self.prices.get(item.get("price", ""), {})
        interval = (price_data.get("recurring") or known_price.get("recurring") or {}).get(
            "interval", "month"
        )
        subscription = self.add_subscription(
            customer=session["customer"],
            metadata=subscription_data.get("metadata") or {},
            price=item.get("price") or new_id("price", 14),
            unit_amount=int(price_data.get("unit_amount", known_price.get("unit_amount", 0))),
            currency=session.get("currency") or "usd",
            interval=interval,
        )
        subscription["latest_invoice"] = session["invoice"]
        return str(subscription["id"])

    def async_payment_succeeded(self, session: dict[str, Any] | str) -> dict[str, Any]:
        """``checkout.session.async_payment_succeeded``: the completed session, now ``paid``."""
        return self._async_payment(session, "checkout.session.async_payment_succeeded", "paid")

    def async_payment_failed(self, session: dict[str, Any] | str) -> dict[str, Any]:
        """``checkout.session.async_payment_failed``: the completed session, still ``unpaid``."""
        return self._async_payment(session, "checkout.session.async_payment_failed", "unpaid")

    def _async_payment(
        self, session: dict[str, Any] | str, event_type: str, payment_status: str
    ) -> dict[str, Any]:
        settled = self._session(session)
        settled["status"] = "complete"
        settled["payment_status"] = payment_status
        if settled["id"] in self.sessions:
            self.sessions[settled["id"]] = copy.deepcopy(settled)
        return self.event(event_type, settled)

    def checkout_expired(self, session: dict[str, Any] | str) -> dict[str, Any]:
        """``checkout.session.expired``."""
        expired = self._session(session)
        expired["status"] = "expired"
        expired["url"] = None
        if expired["id"] in self.sessions:
            self.sessions[expired["id"]] = copy.deepcopy(expired)
        return self.event("checkout.session.expired", expired)

    def invoice_paid(
        self,
        subscription_id: str,
        customer: str | None = None,
        metadata: Mapping[str, str] | None = None,
        amount_paid: int | None = None,
        currency: str | None = None,
        period_end: int | None = None,
        *,
        period_start: int | None = None,
        billing_reason: str = "subscription_cycle",
        invoice_id: str | None = None,
        payment_intent: str | None = None,
    ) -> dict[str, Any]:
        """``invoice.paid``. The subscription id is at ``parent.subscription_details.subscription`` (with the
        subscription's metadata beside it); there is no top-level ``subscription``, and no payment intent
        (since API 2025-03-31 an invoice's payments are only includable): the payment is recorded in
        :attr:`invoice_payments` instead, made by ``payment_intent`` (default: the one that already paid
        this invoice id, else a new one; see :meth:`payment_intent_of`). Nothing is recorded for 0.

        ``period_start``/``period_end`` are the service period the invoice pays for (its line item's
        ``period``; default: 30 days from now); the invoice's own ``period_*`` is the previous period, as on
        Stripe for cycle invoices. Omitted values come from :attr:`subscriptions` when the id is known, and a
        known subscription moves to the new period."""
        stored = self.subscriptions.get(subscription_id)
        item = stored["items"]["data"][0] if stored else None
        customer = customer or (stored["customer"] if stored else new_id("cus", 14))
        metadata = dict(metadata if metadata is not None else (stored["metadata"] if stored else {}))
        currency = currency or (item["price"]["currency"] if item else "usd")
        if amount_paid is None:
            if item is None:
                raise ValueError("amount_paid is required for a subscription this fake doesn't know")
            amount_paid = item["price"]["unit_amount"] * item["quantity"]
        if period_start is None:
            period_start = int(time.time()) if period_end is None else period_end - _PERIOD
        if period_end is None:
            period_end = period_start + _PERIOD
        invoice_id = invoice_id or new_id("in")
        price_id = item["price"]["id"] if item else new_id("price", 14)
        product_id = item["price"]["product"] if item else new_id("prod", 14)
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "account_country": "US",
            "amount_due": amount_paid,
            "amount_paid": amount_paid,
            "amount_remaining": 0,
            "attempt_count": 1,
            "attempted": True,
            "billing_reason": billing_reason,
            "collection_method": "charge_automatically",
            "created": period_start,
            "currency": currency,
            "customer": customer,
            "lines": {
                "object": "list",
                "data": [
                    {
                        "id": new_id("il"),
                        "object": "line_item",
                        "amount": amount_paid,
                        "currency": currency,
                        "quantity": 1,
                        "metadata": dict(metadata),
                        "period": {"start": period_start, "end": period_end},
                        "pricing": {
                            "type": "price_details",
                            "price_details": {"price": price_id, "product": product_id},
                            "unit_amount_decimal": str(amount_paid),
                        },
                    }
                ],
                "has_more": False,
                "url": f"/v1/invoices/{invoice_id}/lines",
            },
            "livemode": False,
            "metadata": {},
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": subscription_id, "metadata": metadata},
            },
            "period_end": period_start,
            "period_start": period_start - _PERIOD
            if billing_reason == "subscription_cycle"
            else period_start,
            "status": "paid",
            "status_transitions": {"paid_at": int(time.time())},
            "total": amount_paid,
        }
        self.invoices[invoice_id] = invoice
        if stored is not None:
            stored["latest_invoice"] = invoice_id
            for line in stored["items"]["data"]:
                line["current_period_start"] = period_start
                line["current_period_end"] = period_end
        if amount_paid > 0:
            known = next(
                (p for p in self.invoice_payments.values() if p["invoice"] == invoice_id),
                None,
            )
            if known is None or (
                payment_intent is not None and known["payment"]["payment_intent"] != payment_intent
            ):
                self.add_invoice_payment(invoice_id, amount_paid, currency, payment_intent=payment_intent)
        return self.event("invoice.paid", invoice)

    def subscription_updated(
        self,
        subscription_id: str,
        *,
        status: str = "active",
        cancel_at_period_end: bool = False,
        current_period_end: int | None = None,
        metadata: Mapping[str, str] | None = None,
        customer: str | None = None,
        previous_attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``customer.subscription.updated``; ``previous_attributes`` defaults to the old values of what
        changed against :attr:`subscriptions` (the stored subscription is updated)."""
        return self._subscription_event(
            "customer.subscription.updated",
            subscription_id,
            status=status,
            cancel_at_period_end=cancel_at_period_end,
            current_period_end=current_period_end,
            metadata=metadata,
            customer=customer,
            previous_attributes=previous_attributes,
        )

    def subscription_deleted(
        self,
        subscription_id: str,
        *,
        metadata: Mapping[str, str] | None = None,
        customer: str | None = None,
        current_period_end: int | None = None,
        ended_at: int | None = None,
    ) -> dict[str, Any]:
        """``customer.subscription.deleted``: ``status`` canceled, ``ended_at``/``canceled_at`` set."""
        return self._subscription_event(
            "customer.subscription.deleted",
            subscription_id,
            status="canceled",
            cancel_at_period_end=False,
            current_period_end=current_period_end,
            metadata=metadata,
            customer=customer,
            ended_at=int(time.time()) if ended_at is None else ended_at,
        )

    def _subscription_event(
        self,
        event_type: str,
        subscription_id: str,
        *,
        status: str,
        cancel_at_period_end: bool,
        current_period_end: int | None,
        metadata: Mapping[str, str] | None,
        customer: str | None,
        previous_attributes: dict[str, Any] | None = None,
        ended_at: int | None = None,
    ) -> dict[str, Any]:
        old = self.subscriptions.get(subscription_id) or self.add_subscription(
            subscription_id, customer=customer, metadata=metadata, current_period_end=current_period_end
        )
        new = copy.deepcopy(old)
        now = int(time.time())
        new["status"] = status
        new["cancel_at_period_end"] = cancel_at_period_end
        if customer is not None:
            new["customer"] = customer
        if metadata is not None:
            new["metadata"] = dict(metadata)
        if current_period_end is not None:
            for line in new["items"]["data"]:
                line["current_period_end"] = current_period_end
        period_end = new["items"]["data"][0]["current_period_end"]
        if cancel_at_period_end:
            new["cancel_at"] = new.get("cancel_at") or period_end
            new["canceled_at"] = new.get("canceled_at") or now
        elif ended_at is None:
            new["cancel_at"] = None
            new["canceled_at"] = None
        if ended_at is not None:
            new["ended_at"] = ended_at
            new["canceled_at"] = new.get("canceled_at") or ended_at
        self.subscriptions[subscription_id] = new
        if event_type.endswith(".deleted"):
            return self.event(event_type, new)
        if previous_attributes is None:
            previous_attributes = {key: old.get(key) for key in new if new[key] != old.get(key)}
        return self.event(event_type, new, previous_attributes=previous_attributes, request_id=_request_id())

    def charge_refunded(
        self,
        payment_intent: str,
        amount: int,
        amount_refunded: int,
        currency: str = "usd",
        *,
        customer: str | None = None,
        metadata: Mapping[str, str] | None = None,
        previously_refunded: int = 0,
    ) -> dict[str, Any]:
        """``charge.refunded``: a Charge (the payment intent's own, see :meth:`charge_of`) with
        ``amount_refunded`` (cumulative) and ``refunded`` true only when fully refunded;
        ``previous_attributes`` carries the amounts before this refund. As in API 2026-10-28, the Charge
        names no invoice. ``metadata`` defaults to the payment intent's (:meth:`payment_intent_metadata`),
        which Stripe copies onto the charge when the payment intent is confirmed."""
        if metadata is None:
            metadata = self.payment_intent_metadata(payment_intent)
        charge = {
            "id": self.charge_of(payment_intent),
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": amount_refunded,
            "captured": True,
            "created": int(time.time()) - 60,
            "currency": currency,
            "customer": customer,
            "description": None,
            "livemode": False,
            "metadata": dict(metadata),
            "paid": True,
            "payment_intent": payment_intent,
            "refunded": amount_refunded >= amount,
            "status": "succeeded",
        }
        return self.event(
            "charge.refunded",
            charge,
            previous_attributes={
                "amount_refunded": previously_refunded,
                "refunded": previously_refunded >= amount,
            },
            request_id=_request_id(),
            idempotency_key=_token(32),
        )

    def dispute(
        self,
        payment_intent: str | None,
        amount: int,
        currency: str = "usd",
        *,
        status: str = "needs_response",
        reason: str = "fraudulent",
        dispute_id: str | None = None,
        charge: str | None = None,
    ) -> dict[str, Any]:
        """A Dispute object (``du_…``) of a charge, as ``charge.dispute.*`` events carry it; kept in
        :attr:`disputes` so the events that follow it see its history. ``warning_*`` statuses are
        inquiries (no money moves, the charge can still be refunded); the others are chargebacks."""
        inquiry = status.startswith("warning_")
        created = int(time.time())
        dispute_id = dispute_id or new_id("du")
        dispute: dict[str, Any] = {
            "id": dispute_id,
            "object": "dispute",
            "amount": amount,
            "balance_transactions": [],
            "charge": charge or (self.charge_of(payment_intent) if payment_intent else new_id("ch")),
            "created": created,
            "currency": currency,
            "enhanced_eligibility_types": [],
            "evidence": {
                "access_activity_log": None,
                "billing_address": None,
                "customer_email_address": None,
                "customer_name": None,
                "product_description": None,
                "receipt": None,
                "uncategorized_text": None,
            },
            "evidence_details": {
                "due_by": created + 7 * _DAY,
                "enhanced_eligibility": {},
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
            },
            "is_charge_refundable": inquiry,
            "livemode": False,
            "metadata": {},
            "network_reason_code": "10.4" if reason == "fraudulent" else "13.1",
            "payment_intent": payment_intent,
            "payment_method_details": {
                "card": {
                    "brand": "visa",
                    "case_type": "inquiry" if inquiry else "chargeback",
                    "network_reason_code": "10.4" if reason == "fraudulent" else "13.1",
                },
                "type": "card",
            },
            "reason": reason,
            "status": status,
        }
        self.disputes[dispute_id] = dispute
        return copy.deepcopy(dispute)

    def dispute_event(self, event_type: str, dispute_id: str, *, status: str | None = None) -> dict[str, Any]:
        """``charge.dispute.<created|updated|closed|funds_withdrawn|funds_reinstated>`` for a dispute made
        with :meth:`dispute`, moved to ``status`` first. ``funds_withdrawn`` / ``funds_reinstated`` add
        the balance transaction Stripe adds (the amount out, then back)."""
        dispute = self.disputes[dispute_id]
        old = copy.deepcopy(dispute)
        if status is not None:
            dispute["status"] = status
        if event_type in ("charge.dispute.funds_withdrawn", "charge.dispute.funds_reinstated"):
            withdrawn = event_type.endswith("withdrawn")
            dispute["balance_transactions"].append(
                {
                    "id": new_id("txn"),
                    "object": "balance_transaction",
                    "amount": -dispute["amount"] if withdrawn else dispute["amount"],
                    "currency": dispute["currency"],
                    "fee": 1500 if withdrawn else 0,
                    "net": -dispute["amount"] - 1500 if withdrawn else dispute["amount"],
                    "reporting_category": "dispute" if withdrawn else "dispute_reversal",
                    "type": "adjustment",
                    "status": "available",
                    "source": dispute["id"],
                }
            )
            dispute["is_charge_refundable"] = False
        if event_type == "charge.dispute.updated":
            changed = {key: old[key] for key in dispute if dispute[key] != old[key]}
            return self.event(event_type, dispute, previous_attributes=changed)
        return self.event(event_type, dispute)

    # -- webhooks --

    def sign(
        self,
        payload: bytes,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        extra_secrets: Iterable[str] = (),
    ) -> str:
        """The ``Stripe-Signature`` header: ``t=<ts>,v1=<hex>`` via stripe's own
        ``WebhookSignature.generate_signature_header``; ``extra_secrets`` add more ``v1=`` entries (secret
        rotation: Stripe signs with every active secret)."""
        text = payload.decode("utf-8")
        moment = int(time.time()) if timestamp is None else timestamp
        header: str = stripe.WebhookSignature.generate_signature_header(
            text, secret or self.webhook_secret, timestamp=moment
        )
        for other in extra_secrets:
            header += f",v1={_v1(text, other, moment)}"
        return header

    def deliver(
        self,
        event: dict[str, Any],
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        extra_secrets: Iterable[str] = (),
    ) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of one delivery: the event serialized once (pretty-printed, as Stripe sends it)
        and signed as-is. Deliver the same event twice to simulate a redelivery."""
        body = json.dumps(event, indent=2).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": self.sign(
                body, timestamp=timestamp, secret=secret, extra_secrets=extra_secrets
            ),
            "User-Agent": WEBHOOK_USER_AGENT,
        }
        return body, headers


def _v1(payload: str, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()


def _check_metadata(metadata: dict[str, Any]) -> None:
    if len(metadata) > 50:
        raise StripeInvalidRequest("Invalid metadata: metadata can have at most 50 keys.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 40:
            raise StripeInvalidRequest(
                f"Metadata keys can have up to 40 characters, but you passed in a key that is {len(key)} "
                f"characters. Invalid key: {key}",
                param=f"metadata[{key}]",
            )
        if not isinstance(value, str):
            raise StripeInvalidRequest("Invalid metadata: values must be strings.", param=f"metadata[{key}]")
        if len(value) > 500:
            raise StripeInvalidRequest(
                "Metadata values can have up to 500 characters, but you passed in a value that is "
                f"{len(value)} characters.",
                param=f"metadata[{key}]",
            )


def build_customer_details(
    *,
    email: str = "jane@example.com",
    name: str = "Jane Doe",
    country: str = "US",
    tax_ids: Iterable[tuple[str, str]] = (),
    business_name: str | None = None,
    tax_exempt: str = "none",
) -> dict[str, Any]:
    """A Checkout Session ``customer_details``; ``tax_ids`` as ``(type, value)`` pairs, e.g.
    ``[("eu_vat", "DE123456789")]``."""
    return {
        "address": {
            "city": None,
            "country": country,
            "line1": None,
            "line2": None,
            "postal_code": None,
            "state": None,
        },
        "business_name": business_name,
        "email": email,
        "individual_name": None,
        "name": name,
        "phone": None,
        "tax_exempt": tax_exempt,
        "tax_ids": [{"type": kind, "value": value} for kind, value in tax_ids],
    }


def subscription_object(
    subscription_id: str,
    *,
    customer: str,
    status: str = "active",
    metadata: Mapping[str, str] | None = None,
    cancel_at_period_end: bool = False,
    current_period_start: int | None = None,
    current_period_end: int | None = None,
    price: str = "price_1Pro",
    unit_amount: int = 999,
    currency: str = "usd",
    interval: str = "month",
    product: str = "prod_Pro",
) -> dict[str, Any]:
    """A Subscription (billing period on ``items.data[]``, not on the subscription, as in the current API)."""
    now = int(time.time())
    start = current_period_start if current_period_start is not None else now
    end = current_period_end if current_period_end is not None else start + _PERIOD
    return {
        "id": subscription_id,
        "object": "subscription",
        "billing_cycle_anchor": start,
        "cancel_at": end if cancel_at_period_end else None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": now if cancel_at_period_end else None,
        "collection_method": "charge_automatically",
        "created": start,
        "currency": currency,
        "customer": customer,
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": new_id("si", 14),
                    "object": "subscription_item",
                    "created": start,
                    "current_period_end": end,
                    "current_period_start": start,
                    "metadata": {},
                    "price": {
                        "id": price,
                        "object": "price",
                        "active": True,
                        "currency": currency,
                        "product": product,
                        "recurring": {"interval": interval, "interval_count": 1},
                        "type": "recurring",
                        "unit_amount": unit_amount,
                    },
                    "quantity": 1,
                    "subscription": subscription_id,
                }
            ],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "start_date": start,
        "status": status,
    }

"""Self-tests: the payment fakes speak the real contracts, proven with the providers' own SDKs."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import razorpay
import razorpay.errors
import requests
import respx
import stripe
from dodopayments import (
    AsyncDodoPayments,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    UnprocessableEntityError,
)
from dodopayments.types import (
    PaymentFailedWebhookEvent,
    PaymentSucceededWebhookEvent,
    ProductItemReqParam,
    RefundSucceededWebhookEvent,
    SubscriptionActiveWebhookEvent,
    SubscriptionCancelledWebhookEvent,
)
from standardwebhooks import Webhook, WebhookVerificationError

from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay, payment_signature, webhook_signature
from tests.fakes.stripe import FakeStripe, build_customer_details, parse_form

# ==================================================================================================
# Stripe
# ==================================================================================================

# stripe 16.1.0's HTTPXClient posts the form body as `data=<str>`, which httpx 0.28 deprecates; with
# filterwarnings=error that surfaces as APIConnectionError("A DeprecationWarning was raised").
# Ignore exactly that warning.
stripe_httpx_data_warning = pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes/text content.:DeprecationWarning"
)

SESSION_PARAMS: dict[str, Any] = {
    "mode": "payment",
    "line_items": [
        {
            "price_data": {
                "currency": "usd",
                "unit_amount": 1999,
                "product_data": {"name": "100 credits"},
            },
            "quantity": 2,
        }
    ],
    "client_reference_id": "user_2abcDEF123",
    "metadata": {"user_id": "user_2abcDEF123", "plan": "credits_100"},
    "success_url": "https://app.example.com/billing/success?session_id={CHECKOUT_SESSION_ID}",
    "cancel_url": "https://app.example.com/billing/cancel",
    "customer_email": "jane@example.com",
    "automatic_tax": {"enabled": True},
    "tax_id_collection": {"enabled": True},
}

SUBSCRIPTION_PARAMS: dict[str, Any] = {
    "mode": "subscription",
    "line_items": [
        {
            "price_data": {
                "currency": "usd",
                "unit_amount": 999,
                "product_data": {"name": "Pro"},
                "recurring": {"interval": "month"},
            },
            "quantity": 1,
        }
    ],
    "client_reference_id": "user_2abcDEF123",
    "subscription_data": {"metadata": {"user_id": "user_2abcDEF123"}},
    "success_url": "https://app.example.com/billing/success",
}


@pytest.fixture
def fake_stripe(outside_http: respx.MockRouter) -> FakeStripe:
    return FakeStripe(outside_http)


@pytest.fixture
async def stripe_client(fake_stripe: FakeStripe) -> AsyncIterator[stripe.StripeClient]:
    http_client = stripe.HTTPXClient()
    client = stripe.StripeClient(
        fake_stripe.secret_key,
        base_addresses={"api": fake_stripe.api_base},
        max_network_retries=0,
        http_client=http_client,
    )
    yield client
    await http_client.close_async()  # type: ignore[no-untyped-call]


@stripe_httpx_data_warning
async def test_stripe_sdk_creates_a_checkout_session(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    session = await stripe_client.v1.checkout.sessions.create_async(params=SESSION_PARAMS)  # type: ignore[arg-type]

    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert session.client_reference_id == "user_2abcDEF123"
    assert session.metadata is not None
    assert session.metadata.to_dict() == {"user_id": "user_2abcDEF123", "plan": "credits_100"}
    assert (session.amount_total, session.currency) == (3998, "usd")
    assert session.automatic_tax.enabled is True
    assert session.tax_id_collection is not None
    assert session.tax_id_collection.enabled is True
    assert session.customer_email == "jane@example.com"
    assert session.subscription is None
    assert session.last_response is not None
    assert str(session.last_response.request_id).startswith("req_")

    assert fake_stripe.sessions[session.id]["amount_total"] == 3998
    sent = fake_stripe.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk_test_fake"
    assert sent.headers["stripe-version"] == "2026-10-28.endive"
    assert sent.idempotency_key  # the SDK sends one on every POST
    assert sent.params["line_items"][0]["price_data"] == {
        "currency": "usd",
        "unit_amount": "1999",
        "product_data": {"name": "100 credits"},
    }
    assert sent.params["automatic_tax"] == {"enabled": "true"}

    fetched = await stripe_client.v1.checkout.sessions.retrieve_async(session.id)
    assert fetched.id == session.id
    assert fetched.amount_total == 3998


@stripe_httpx_data_warning
async def test_stripe_validation_errors_have_stripes_shape(stripe_client: stripe.StripeClient) -> None:
    no_items = {key: value for key, value in SESSION_PARAMS.items() if key != "line_items"}
    with pytest.raises(stripe.InvalidRequestError) as missing_items:
        await stripe_client.v1.checkout.sessions.create_async(params=no_items)  # type: ignore[arg-type]
    assert missing_items.value.http_status == 400
    assert (missing_items.value.code, missing_items.value.param) == ("parameter_missing", "line_items")
    assert missing_items.value.request_id is not None
    assert missing_items.value.request_id.startswith("req_")

    no_success_url = {key: value for key, value in SESSION_PARAMS.items() if key != "success_url"}
    with pytest.raises(stripe.InvalidRequestError) as missing_url:
        await stripe_client.v1.checkout.sessions.create_async(params=no_success_url)  # type: ignore[arg-type]
    assert missing_url.value.param == "success_url"

    with pytest.raises(stripe.InvalidRequestError) as unknown_param:
        await stripe_client.v1.checkout.sessions.create_async(params={**SESSION_PARAMS, "colour": "red"})  # type: ignore[arg-type]
    assert (unknown_param.value.code, unknown_param.value.param) == ("parameter_unknown", "colour")
    typo = {
        **SESSION_PARAMS,
        "line_items": [{"price_data": {"currency": "usd", "unit_amont": 5}, "quantity": 1}],
    }
    with pytest.raises(
        stripe.InvalidRequestError, match=r"unknown parameter: line_items\[0\]\[price_data\]\[unit_amont\]"
    ):
        await stripe_client.v1.checkout.sessions.create_async(params=typo)  # type: ignore[arg-type]
    with pytest.raises(stripe.InvalidRequestError, match="subscription_data"):
        await stripe_client.v1.checkout.sessions.create_async(
            params={**SESSION_PARAMS, "subscription_data": {"metadata": {"a": "b"}}}  # type: ignore[arg-type]
        )

    one_time_in_subscription = {**SESSION_PARAMS, "mode": "subscription"}
    with pytest.raises(stripe.InvalidRequestError, match="recurring price"):
        await stripe_client.v1.checkout.sessions.create_async(params=one_time_in_subscription)  # type: ignore[arg-type]

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        await stripe_client.v1.checkout.sessions.retrieve_async("cs_test_nope")
    assert (unknown.value.http_status, unknown.value.code) == (404, "resource_missing")


@stripe_httpx_data_warning
async def test_stripe_rejects_a_wrong_key(fake_stripe: FakeStripe) -> None:
    http_client = stripe.HTTPXClient()
    client = stripe.StripeClient(
        "sk_test_wrong",
        base_addresses={"api": fake_stripe.api_base},
        max_network_retries=0,
        http_client=http_client,
    )
    try:
        with pytest.raises(stripe.AuthenticationError, match=r"Invalid API Key provided: sk_test_\*+rong"):
            await client.v1.checkout.sessions.create_async(params=SESSION_PARAMS)  # type: ignore[arg-type]
    finally:
        await http_client.close_async()  # type: ignore[no-untyped-call]
    assert fake_stripe.sessions == {}


@stripe_httpx_data_warning
async def test_stripe_idempotency(fake_stripe: FakeStripe, stripe_client: stripe.StripeClient) -> None:
    sessions = stripe_client.v1.checkout.sessions
    first = await sessions.create_async(params=SESSION_PARAMS, options={"idempotency_key": "k1"})  # type: ignore[arg-type]
    again = await sessions.create_async(params=SESSION_PARAMS, options={"idempotency_key": "k1"})  # type: ignore[arg-type]
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["idempotent-replayed"] == "true"
    assert len(fake_stripe.sessions) == 1

    changed = {**SESSION_PARAMS, "client_reference_id": "someone_else"}
    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        await sessions.create_async(params=changed, options={"idempotency_key": "k1"})  # type: ignore[arg-type]
    other = await sessions.create_async(params=changed, options={"idempotency_key": "k2"})  # type: ignore[arg-type]
    assert other.id != first.id


@stripe_httpx_data_warning
async def test_stripe_failure_switches(fake_stripe: FakeStripe, stripe_client: stripe.StripeClient) -> None:
    sessions = stripe_client.v1.checkout.sessions
    fake_stripe.fail_next(500)
    with pytest.raises(stripe.APIError) as server_error:
        await sessions.create_async(params=SESSION_PARAMS, options={"idempotency_key": "k500"})  # type: ignore[arg-type]
    assert server_error.value.http_status == 500
    # Stripe stores a 500 under its idempotency key: the same key replays it.
    with pytest.raises(stripe.APIError):
        await sessions.create_async(params=SESSION_PARAMS, options={"idempotency_key": "k500"})  # type: ignore[arg-type]

    fake_stripe.fail_next(429)
    with pytest.raises(stripe.RateLimitError):
        await sessions.create_async(params=SESSION_PARAMS, options={"idempotency_key": "k429"})  # type: ignore[arg-type]
    after_rate_limit = await sessions.create_async(params=SESSION_PARAMS, options={"idempotency_key": "k429"})  # type: ignore[arg-type]
    assert after_rate_limit.id in fake_stripe.sessions

    fake_stripe.timeout_next()
    with pytest.raises(stripe.APIConnectionError):
        await sessions.create_async(params=SESSION_PARAMS)  # type: ignore[arg-type]
    assert len(fake_stripe.sessions) == 1

    fake_stripe.timeout_next(created=True)
    with pytest.raises(stripe.APIConnectionError):
        await sessions.create_async(params=SESSION_PARAMS, options={"idempotency_key": "lost"})  # type: ignore[arg-type]
    assert len(fake_stripe.sessions) == 2
    recovered = await sessions.create_async(params=SESSION_PARAMS, options={"idempotency_key": "lost"})  # type: ignore[arg-type]
    assert recovered.id in fake_stripe.sessions
    assert len(fake_stripe.sessions) == 2


def test_stripe_golden_vector() -> None:
    header = FakeStripe(respx.MockRouter()).sign(
        b'{"id":"evt_test_webhook","object":"event"}', timestamp=1700000000, secret="whsec_test_secret"
    )
    assert header == "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990"


@stripe_httpx_data_warning
async def test_stripe_webhook_delivery_verifies_with_the_sdk(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    session = await stripe_client.v1.checkout.sessions.create_async(params=SESSION_PARAMS)  # type: ignore[arg-type]
    event = fake_stripe.checkout_completed(
        session.id, customer_details=build_customer_details(country="DE", tax_ids=[("eu_vat", "DE123456789")])
    )
    body, headers = fake_stripe.deliver(event)

    assert headers["Content-Type"] == "application/json; charset=utf-8"
    verified = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], fake_stripe.webhook_secret)
    assert verified.id == event["id"]
    assert verified.id.startswith("evt_")
    assert verified.type == "checkout.session.completed"
    assert verified.api_version == "2026-10-28.endive"
    completed = verified.data.object
    assert (completed["id"], completed["status"], completed["payment_status"]) == (
        session.id,
        "complete",
        "paid",
    )
    assert completed["customer_details"]["address"]["country"] == "DE"
    assert [tax_id.to_dict() for tax_id in completed["customer_details"]["tax_ids"]] == [
        {"type": "eu_vat", "value": "DE123456789"}
    ]
    assert completed["payment_intent"].startswith("pi_")
    assert completed["metadata"].to_dict() == {"user_id": "user_2abcDEF123", "plan": "credits_100"}
    assert fake_stripe.sessions[session.id]["status"] == "complete"  # a re-fetch sees the new state

    tampered = body.replace(b'"paid"', b'"unpaid"')
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, headers["Stripe-Signature"], fake_stripe.webhook_secret)
    stale = fake_stripe.sign(body, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError, match="outside the tolerance zone"):
        stripe.Webhook.construct_event(body, stale, fake_stripe.webhook_secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_other")
    _, rotated = fake_stripe.deliver(event, extra_secrets=["whsec_next"])
    assert rotated["Stripe-Signature"].count("v1=") == 2
    assert stripe.Webhook.construct_event(body, rotated["Stripe-Signature"], "whsec_next").id == event["id"]


@stripe_httpx_data_warning
async def test_stripe_subscription_flow_and_event_shapes(
    fake_stripe: FakeStripe, stripe_client: stripe.StripeClient
) -> None:
    session = await stripe_client.v1.checkout.sessions.create_async(params=SUBSCRIPTION_PARAMS)  # type: ignore[arg-type]
    assert (session.mode, session.amount_total) == ("subscription", 999)
    completed = fake_stripe.checkout_completed(session.id)["data"]["object"]
    subscription_id = completed["subscription"]
    assert subscription_id.startswith("sub_")
    assert completed["invoice"].startswith("in_")
    assert completed["payment_intent"] is None

    subscription = await stripe_client.v1.subscriptions.retrieve_async(subscription_id)
    assert subscription.status == "active"
    assert subscription.metadata.to_dict() == {
        "user_id": "user_2abcDEF123"
    }  # from subscription_data, not the session
    assert subscription["items"].data[0].price.unit_amount == 999

    period_end = int(time.time()) + 60 * 86_400
    paid = fake_stripe.invoice_paid(subscription_id, period_end=period_end)
    invoice = paid["data"]["object"]
    assert paid["type"] == "invoice.paid"
    assert "subscription" not in invoice
    assert invoice["parent"]["subscription_details"] == {
        "subscription": subscription_id,
        "metadata": {"user_id": "user_2abcDEF123"},
    }
    assert (invoice["amount_paid"], invoice["currency"], invoice["status"]) == (999, "usd", "paid")
    assert invoice["lines"]["data"][0]["period"]["end"] == period_end
    body, headers = fake_stripe.deliver(paid)
    parsed = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], fake_stripe.webhook_secret)
    assert isinstance(parsed.data.object, stripe.Invoice)
    refetched = await stripe_client.v1.subscriptions.retrieve_async(subscription_id)
    assert refetched["items"].data[0].current_period_end == period_end

    updated = fake_stripe.subscription_updated(subscription_id, cancel_at_period_end=True)
    assert updated["type"] == "customer.subscription.updated"
    assert updated["data"]["object"]["cancel_at_period_end"] is True
    assert updated["data"]["previous_attributes"]["cancel_at_period_end"] is False
    deleted = fake_stripe.subscription_deleted(subscription_id)["data"]["object"]
    assert (deleted["status"], deleted["ended_at"] is not None) == ("canceled", True)
    assert "previous_attributes" not in fake_stripe.subscription_deleted(subscription_id)["data"]

    refund = fake_stripe.charge_refunded("pi_123", 1999, 500, "usd")
    charge = refund["data"]["object"]
    assert (charge["payment_intent"], charge["amount_refunded"], charge["refunded"]) == ("pi_123", 500, False)
    assert fake_stripe.charge_refunded("pi_123", 1999, 1999)["data"]["object"]["refunded"] is True

    for builder in (fake_stripe.async_payment_succeeded, fake_stripe.async_payment_failed):
        event = builder(session.id)
        assert event["type"].startswith("checkout.session.async_payment_")
        assert event["data"]["object"]["status"] == "complete"


def test_stripe_form_decoding() -> None:
    params = parse_form(
        "line_items[0][price_data][currency]=usd&line_items[0][quantity]=1&line_items[1][price]=price_1"
        "&line_items[1][quantity]=3&metadata[0]=zero&metadata[user_id]=u1&expand[0]=line_items&mode=payment"
    )
    assert params == {
        "line_items": [
            {"price_data": {"currency": "usd"}, "quantity": "1"},
            {"price": "price_1", "quantity": "3"},
        ],
        "metadata": {"0": "zero", "user_id": "u1"},
        "expand": ["line_items"],
        "mode": "payment",
    }


# ==================================================================================================
# Razorpay
# ==================================================================================================


@pytest.fixture(scope="module")
def razorpay_server() -> Iterator[FakeRazorpay]:
    with FakeRazorpay() as fake:
        yield fake


@pytest.fixture
def fake_razorpay(razorpay_server: FakeRazorpay) -> FakeRazorpay:
    razorpay_server.orders.clear()
    razorpay_server.payments.clear()
    razorpay_server.requests.clear()
    return razorpay_server


@pytest.fixture
def razorpay_client(fake_razorpay: FakeRazorpay) -> Iterator[razorpay.Client]:
    with requests.Session() as session:
        yield razorpay.Client(
            session=session,
            auth=(fake_razorpay.key_id, fake_razorpay.key_secret),
            base_url=fake_razorpay.base_url,
        )


def test_razorpay_golden_vector() -> None:
    assert (
        payment_signature("fake_order_id", "fake_payment_id", "key_secret")
        == "b2335e3b0801106b84a7faff035df56ecffde06918c9ddd1f0fafbb37a51cc89"
    )


def test_razorpay_server_starts_and_stops_cleanly() -> None:
    fake = FakeRazorpay().start()
    url = fake.base_url
    assert url.startswith("http://127.0.0.1:")
    with requests.Session() as session:
        assert session.get(f"{url}/v1/orders/order_x", timeout=5).status_code == 401
    fake.stop()
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    with requests.Session() as session, pytest.raises(requests.ConnectionError):
        session.get(f"{url}/v1/orders/order_x", timeout=5)


def test_razorpay_sdk_creates_and_fetches_orders(
    fake_razorpay: FakeRazorpay, razorpay_client: razorpay.Client
) -> None:
    order = razorpay_client.order.create(
        {
            "amount": 50000,
            "currency": "INR",
            "receipt": "rcpt_user_2abc_1",
            "notes": {"user_id": "user_2abcDEF123"},
        }
    )
    assert order["id"].startswith("order_")
    assert len(order["id"]) == len("order_") + 14
    assert order["entity"] == "order"
    assert (order["amount"], order["amount_paid"], order["amount_due"]) == (50000, 0, 50000)
    assert (order["currency"], order["receipt"], order["status"], order["attempts"]) == (
        "INR",
        "rcpt_user_2abc_1",
        "created",
        0,
    )
    assert order["notes"] == {"user_id": "user_2abcDEF123"}
    assert isinstance(order["created_at"], int)
    assert razorpay_client.order.fetch(order["id"]) == order
    assert fake_razorpay.orders[order["id"]] == order
    assert fake_razorpay.requests[0]["body"]["amount"] == 50000
    assert fake_razorpay.requests[0]["headers"]["content-type"] == "application/json"

    bare = razorpay_client.order.create({"amount": 100, "currency": "INR"})
    assert (bare["notes"], bare["receipt"]) == ([], None)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"amount": 99, "currency": "INR"}, "amount", "at least INR 1.00"),
        ({"amount": 100.5, "currency": "INR"}, "amount", "must be an integer"),
        ({"currency": "INR"}, "amount", "amount field is required"),
        ({"amount": 100}, "currency", "currency field is required"),
        ({"amount": 100, "currency": "INR", "receipt": "r" * 41}, "receipt", "40 characters"),
        ({"amount": 100, "currency": "INR", "notes": {str(n): "x" for n in range(16)}}, "notes", "15"),
        ({"amount": 100, "currency": "INR", "colour": "red"}, "colour", "should not be sent"),
    ],
)
def test_razorpay_validation_errors(
    fake_razorpay: FakeRazorpay,
    razorpay_client: razorpay.Client,
    body: dict[str, Any],
    field: str,
    message: str,
) -> None:
    with pytest.raises(razorpay.errors.BadRequestError, match=message):
        razorpay_client.order.create(body)
    with requests.Session() as session:
        raw = session.post(
            f"{fake_razorpay.base_url}/v1/orders",
            json=body,
            auth=(fake_razorpay.key_id, fake_razorpay.key_secret),
            timeout=5,
        )
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert (
        error["code"],
        error["field"],
        error["source"],
        error["step"],
        error["reason"],
        error["metadata"],
    ) == (
        "BAD_REQUEST_ERROR",
        field,
        "business",
        "payment_initiation",
        "input_validation_failed",
        {},
    )
    assert fake_razorpay.orders == {}


def test_razorpay_auth_and_failure_switch(
    fake_razorpay: FakeRazorpay, razorpay_client: razorpay.Client
) -> None:
    with requests.Session() as session:
        wrong = razorpay.Client(
            session=session, auth=(fake_razorpay.key_id, "nope"), base_url=fake_razorpay.base_url
        )
        with pytest.raises(razorpay.errors.BadRequestError, match="Authentication failed"):
            wrong.order.create({"amount": 100, "currency": "INR"})

    fake_razorpay.fail_next(500)
    with pytest.raises(razorpay.errors.ServerError):
        razorpay_client.order.create({"amount": 100, "currency": "INR"})
    assert razorpay_client.order.create({"amount": 100, "currency": "INR"})["status"] == "created"
    with pytest.raises(razorpay.errors.BadRequestError, match="does not exist"):
        razorpay_client.order.fetch("order_DoesNotExist00")


def test_razorpay_payment_and_webhooks_verify_with_the_sdk(
    fake_razorpay: FakeRazorpay, razorpay_client: razorpay.Client
) -> None:
    order = razorpay_client.order.create(
        {"amount": 100, "currency": "INR", "notes": {"user_id": "user_2abcDEF123"}}
    )
    result = fake_razorpay.pay(order["id"])
    assert set(result) == {"razorpay_order_id", "razorpay_payment_id", "razorpay_signature"}
    assert razorpay_client.utility.verify_payment_signature(result) is True
    with pytest.raises(razorpay.errors.SignatureVerificationError):
        razorpay_client.utility.verify_payment_signature(
            {**result, "razorpay_payment_id": "pay_someoneElse00"}
        )
    fetched = razorpay_client.order.fetch(order["id"])
    assert (fetched["status"], fetched["amount_paid"], fetched["amount_due"], fetched["attempts"]) == (
        "paid",
        100,
        0,
        1,
    )

    payment_id = result["razorpay_payment_id"]
    captured = fake_razorpay.payment_captured_event(order["id"], payment_id)
    assert (captured["entity"], captured["event"], captured["contains"]) == (
        "event",
        "payment.captured",
        ["payment"],
    )
    payment = captured["payload"]["payment"]["entity"]
    assert (payment["id"], payment["order_id"], payment["status"], payment["captured"]) == (
        payment_id,
        order["id"],
        "captured",
        True,
    )
    assert payment["notes"] == {"user_id": "user_2abcDEF123"}

    paid = fake_razorpay.order_paid_event(order["id"], payment_id)
    assert paid["contains"] == ["payment", "order"]
    assert paid["payload"]["order"]["entity"]["status"] == "paid"
    assert paid["payload"]["order"]["entity"]["notes"] == {"user_id": "user_2abcDEF123"}

    body, headers = fake_razorpay.deliver(paid)
    assert headers["Content-Type"] == "application/json"
    assert len(headers["x-razorpay-event-id"]) == 14
    assert razorpay_client.utility.verify_webhook_signature(
        body.decode("utf-8"), headers["X-Razorpay-Signature"], fake_razorpay.webhook_secret
    )
    with pytest.raises(razorpay.errors.SignatureVerificationError):
        razorpay_client.utility.verify_webhook_signature(
            body.decode("utf-8"), headers["X-Razorpay-Signature"], fake_razorpay.key_secret
        )
    with pytest.raises(razorpay.errors.SignatureVerificationError):
        razorpay_client.utility.verify_webhook_signature(
            body.decode("utf-8").replace('"paid"', '"created"'),
            headers["X-Razorpay-Signature"],
            fake_razorpay.webhook_secret,
        )
    _, again = fake_razorpay.deliver(paid, event_id=headers["x-razorpay-event-id"])
    assert again == headers  # a redelivery: same id, same signature

    failed = fake_razorpay.payment_failed_event(order["id"])
    failed_payment = failed["payload"]["payment"]["entity"]
    assert (failed_payment["status"], failed_payment["error_code"]) == ("failed", "BAD_REQUEST_ERROR")

    refund = fake_razorpay.refund_processed_event(payment_id, 40)
    assert (refund["event"], refund["contains"]) == ("refund.processed", ["refund", "payment"])
    assert refund["payload"]["refund"]["entity"]["amount"] == 40
    assert refund["payload"]["payment"]["entity"]["refund_status"] == "partial"
    full = fake_razorpay.refund_processed_event(payment_id)
    assert full["payload"]["refund"]["entity"]["amount"] == 60
    assert full["payload"]["payment"]["entity"]["status"] == "refunded"
    assert (
        webhook_signature(body, fake_razorpay.webhook_secret)
        == hmac.new(fake_razorpay.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    )


# ==================================================================================================
# Dodo Payments
# ==================================================================================================

CART: list[ProductItemReqParam] = [{"product_id": "pdt_credits100", "quantity": 1}]


@pytest.fixture
def fake_dodo(outside_http: respx.MockRouter) -> FakeDodo:
    return FakeDodo(outside_http)


@pytest.fixture
async def dodo_client(fake_dodo: FakeDodo) -> AsyncIterator[AsyncDodoPayments]:
    client = AsyncDodoPayments(bearer_token=fake_dodo.api_key, base_url=fake_dodo.base_url, max_retries=0)
    yield client
    await client.close()


def test_standard_webhooks_golden_vector() -> None:
    signature = Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek", datetime.fromtimestamp(1614265330, UTC), '{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


async def test_dodo_sdk_creates_a_checkout_session(
    fake_dodo: FakeDodo, dodo_client: AsyncDodoPayments
) -> None:
    created = await dodo_client.checkout_sessions.create(
        product_cart=CART,
        customer={"email": "jane@example.com", "name": "Jane Doe"},
        metadata={"user_id": "user_2abcDEF123", "plan": "credits_100"},
        return_url="https://app.example.com/billing/return",
    )
    assert created.session_id.startswith("cks_")
    assert created.checkout_url == f"https://checkout.dodopayments.com/session/{created.session_id}"
    assert (created.client_secret, created.payment_id, created.publishable_key) == (None, None, None)
    assert fake_dodo.checkouts[created.session_id]["metadata"] == {
        "user_id": "user_2abcDEF123",
        "plan": "credits_100",
    }
    assert fake_dodo.requests[-1].headers["authorization"] == "Bearer dodo_test_fake"

    status = await dodo_client.checkout_sessions.retrieve(created.session_id)
    assert (status.id, status.payment_id, status.payment_status) == (created.session_id, None, None)

    event = fake_dodo.payment_succeeded(created.session_id, total_amount=999, currency="USD")
    paid = await dodo_client.checkout_sessions.retrieve(created.session_id)
    assert (paid.payment_id, paid.payment_status) == (event["data"]["payment_id"], "succeeded")


async def test_dodo_errors(fake_dodo: FakeDodo, dodo_client: AsyncDodoPayments) -> None:
    with pytest.raises(BadRequestError) as empty:
        await dodo_client.checkout_sessions.create(product_cart=[])
    assert isinstance(empty.value.body, dict)
    assert set(empty.value.body) == {"code", "message"}
    with pytest.raises(UnprocessableEntityError):
        await dodo_client.checkout_sessions.create(product_cart=[{"product_id": "pdt_x"}])  # type: ignore[typeddict-item]
    fake_dodo.fail_next(500)
    with pytest.raises(InternalServerError):
        await dodo_client.checkout_sessions.create(product_cart=CART)
    assert fake_dodo.checkouts == {}

    wrong = AsyncDodoPayments(bearer_token="dodo_wrong", base_url=fake_dodo.base_url, max_retries=0)
    try:
        with pytest.raises(AuthenticationError):
            await wrong.checkout_sessions.create(product_cart=CART)
    finally:
        await wrong.close()


async def test_dodo_webhooks_verify_with_standardwebhooks(
    fake_dodo: FakeDodo, dodo_client: AsyncDodoPayments
) -> None:
    assert fake_dodo.webhook_secret.startswith("whsec_")
    created = await dodo_client.checkout_sessions.create(
        product_cart=CART, metadata={"user_id": "user_2abcDEF123"}, customer={"email": "jane@example.com"}
    )
    event = fake_dodo.payment_succeeded(created.session_id, total_amount=999, currency="USD")
    moment = datetime.now(UTC)
    body, headers = fake_dodo.deliver(event, timestamp=moment)

    verified = Webhook(fake_dodo.webhook_secret).verify(body, headers)
    assert verified == event
    assert verified["data"]["metadata"] == {"user_id": "user_2abcDEF123"}  # copied from the checkout session
    assert verified["data"]["checkout_session_id"] == created.session_id
    assert verified["data"]["customer"]["email"] == "jane@example.com"

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(fake_dodo.webhook_secret).verify(body.replace(b"999", b"1"), headers)
    old_body, old_headers = fake_dodo.deliver(event, timestamp=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(fake_dodo.webhook_secret).verify(old_body, old_headers)
    new_body, new_headers = fake_dodo.deliver(event, timestamp=datetime.now(UTC) + timedelta(minutes=6))
    with pytest.raises(WebhookVerificationError, match="too new"):
        Webhook(fake_dodo.webhook_secret).verify(new_body, new_headers)

    next_secret = "whsec_" + "bmV4dC1zZWNyZXQtbmV4dC1zZWNyZXQ="
    # Signed at the same moment as the first delivery (the signature covers the timestamp).
    _, rotated = fake_dodo.deliver(
        event, msg_id=headers["webhook-id"], timestamp=moment, extra_secrets=[next_secret]
    )
    assert rotated["webhook-id"] == headers["webhook-id"]
    assert len(rotated["webhook-signature"].split(" ")) == 2
    assert Webhook(next_secret).verify(body, {**headers, "webhook-signature": rotated["webhook-signature"]})


async def test_dodo_events_parse_as_the_sdks_models(fake_dodo: FakeDodo) -> None:
    def parsed(event: dict[str, Any]) -> Any:
        body, _ = fake_dodo.deliver(event)
        return json.loads(body)

    succeeded = PaymentSucceededWebhookEvent.model_validate(
        parsed(
            fake_dodo.payment_succeeded("cks_x", total_amount=999, currency="USD", metadata={"user_id": "u1"})
        )
    )
    assert (succeeded.data.status, succeeded.data.total_amount, succeeded.data.metadata) == (
        "succeeded",
        999,
        {"user_id": "u1"},
    )
    failed = PaymentFailedWebhookEvent.model_validate(
        parsed(fake_dodo.payment_failed("cks_x", total_amount=999, currency="USD", metadata={}))
    )
    assert (failed.data.status, failed.data.error_code) == ("failed", "CARD_DECLINED")
    refund = RefundSucceededWebhookEvent.model_validate(
        parsed(fake_dodo.refund_succeeded("pay_1", 500, "USD", {"user_id": "u1"}, is_partial=True))
    )
    assert (refund.data.payment_id, refund.data.amount, refund.data.is_partial) == ("pay_1", 500, True)
    active = SubscriptionActiveWebhookEvent.model_validate(
        parsed(fake_dodo.subscription_event("active", "sub_1", {"user_id": "u1"}))
    )
    assert (active.type, active.data.status, active.data.metadata) == (
        "subscription.active",
        "active",
        {"user_id": "u1"},
    )
    cancelled = SubscriptionCancelledWebhookEvent.model_validate(
        parsed(fake_dodo.subscription_event("cancelled", "sub_1", {"user_id": "u1"}))
    )
    assert cancelled.data.status == "cancelled"
    assert cancelled.data.cancelled_at is not None
    with pytest.raises(ValueError, match="unknown subscription event"):
        fake_dodo.subscription_event("exploded", "sub_1")

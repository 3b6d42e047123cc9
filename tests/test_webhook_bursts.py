"""A burst of one event delivered many times at once (a provider retrying while we are slow) is answered
200 on every database: one delivery applies it, the others are told `duplicate`, credits move once.

MariaDB used to answer most of the burst 503: the inbox's duplicate insert took a shared lock on the
existing row, then asked for an exclusive one, and InnoDB resolved the waiters' upgrades as deadlocks."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.session import Database
from app.models import CreditAccount, CreditLedgerEntry, LedgerReason, User
from tests.conftest import make_settings
from tests.factories import bearer
from tests.fakes.clerk import FakeClerk, user_payload
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.committed import cleanup, committed_user

BURST = 10
BONUS = 10_000
BASIC = 100_000  # credits of the basic pack, millicredits


@pytest.fixture
def fake_clerk(outside_http: respx.MockRouter) -> FakeClerk:
    return FakeClerk(outside_http)


@pytest.fixture
def settings(
    database_url: str,
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    fake_clerk: FakeClerk,
) -> Settings:
    return make_settings(
        database_url=database_url,
        stripe_api_base=fake_stripe.api_base,
        stripe_secret_key=fake_stripe.secret_key,
        stripe_webhook_secret=fake_stripe.webhook_secret,
        razorpay_base_url=fake_razorpay.base_url,
        razorpay_key_id=fake_razorpay.key_id,
        razorpay_key_secret=fake_razorpay.key_secret,
        razorpay_webhook_secret=fake_razorpay.webhook_secret,
        dodo_base_url=fake_dodo.base_url,
        dodo_api_key=fake_dodo.api_key,
        dodo_webhook_secret=fake_dodo.webhook_secret,
        dodo_credits_product_id="pdt_custom_credits",
        payment_api_max_retries=0,
        clerk_issuer=fake_clerk.issuer,
        clerk_jwks_url=fake_clerk.jwks_url,
        clerk_webhook_secret=fake_clerk.svix_secret,
        clerk_authorized_parties=[fake_clerk.authorized_party],
    )


@pytest.fixture
async def client(committing: tuple[FastAPI, Database]) -> AsyncIterator[httpx.AsyncClient]:
    app, _ = committing
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


Delivery = tuple[bytes, dict[str, str]]
# Opens a payment of the basic pack for the user and returns the signed delivery that pays it.
PaidDelivery = Callable[[httpx.AsyncClient, dict[str, str], dict[str, Any]], Awaitable[Delivery]]


async def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _stripe(client: httpx.AsyncClient, auth: dict[str, str], fakes: dict[str, Any]) -> Delivery:
    fake: FakeStripe = fakes["stripe"]
    checkout = {"plan_id": "basic", "provider": "stripe", "currency": "USD"}
    created = await _ok(await client.post("/api/v1/payment/create-checkout", json=checkout, headers=auth))
    return fake.deliver(fake.checkout_completed(created["session_id"]))


async def _razorpay(client: httpx.AsyncClient, auth: dict[str, str], fakes: dict[str, Any]) -> Delivery:
    fake: FakeRazorpay = fakes["razorpay"]
    created = await _ok(
        await client.post("/api/v1/orders/create-order", json={"plan_id": "basic"}, headers=auth)
    )
    fake.pay(created["razorpay_order_id"])
    return fake.deliver(fake.payment_captured_event(created["razorpay_order_id"]))


async def _dodo(client: httpx.AsyncClient, auth: dict[str, str], fakes: dict[str, Any]) -> Delivery:
    fake: FakeDodo = fakes["dodo"]
    checkout = {"provider": "dodo", "credits": 100}
    created = await _ok(await client.post("/api/v1/payment/create-checkout", json=checkout, headers=auth))
    return fake.deliver(fake.payment_succeeded(created["session_id"], total_amount=500, currency="USD"))


PAYMENTS: dict[str, tuple[PaidDelivery, str]] = {
    "stripe": (_stripe, "/api/v1/webhooks/stripe"),
    "razorpay": (_razorpay, "/api/v1/webhooks/razorpay"),
    "dodo": (_dodo, "/api/v1/webhooks/dodo"),
}
EVENT_ID_HEADER = {"razorpay": "x-razorpay-event-id", "dodo": "webhook-id"}


def _event_id(provider: str, delivery: Delivery) -> str:
    body, headers = delivery
    if provider in EVENT_ID_HEADER:
        return headers[EVENT_ID_HEADER[provider]]
    return str(json.loads(body)["id"])


async def _purchases(engine: AsyncEngine, user_id: uuid.UUID) -> tuple[int, list[int]]:
    async with engine.connect() as connection:
        balance = await connection.scalar(
            select(CreditAccount.balance).where(CreditAccount.user_id == user_id)
        )
        purchases = await connection.scalars(
            select(CreditLedgerEntry.amount)
            .join(CreditAccount, CreditAccount.id == CreditLedgerEntry.account_id)
            .where(CreditAccount.user_id == user_id, CreditLedgerEntry.reason == LedgerReason.purchase.value)
        )
        return int(balance or 0), list(purchases)


async def _burst(client: httpx.AsyncClient, path: str, delivery: Delivery) -> list[httpx.Response]:
    body, headers = delivery
    return list(
        await asyncio.gather(*(client.post(path, content=body, headers=headers) for _ in range(BURST)))
    )


def _statuses(responses: list[httpx.Response]) -> list[tuple[int, str]]:
    return sorted((r.status_code, r.json().get("status") or r.json().get("error")) for r in responses)


@pytest.mark.parametrize("provider", list(PAYMENTS))
async def test_a_payment_event_delivered_ten_times_at_once_grants_once_and_answers_200(
    provider: str,
    client: httpx.AsyncClient,
    committing: tuple[FastAPI, Database],
    engine: AsyncEngine,
    settings: Settings,
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
) -> None:
    app, database = committing
    user = await committed_user(database, settings)
    events: list[tuple[str, str]] = []
    try:
        pay, path = PAYMENTS[provider]
        fakes = {"stripe": fake_stripe, "razorpay": fake_razorpay, "dodo": fake_dodo}
        delivery = await pay(client, bearer(app.state.container, user), fakes)
        events.append((provider, _event_id(provider, delivery)))

        responses = await _burst(client, path, delivery)

        assert _statuses(responses) == [(200, "duplicate")] * (BURST - 1) + [(200, "processed")]
        assert await _purchases(engine, user.id) == (BONUS + BASIC, [BASIC])
    finally:
        await cleanup(engine, [user.id], events)


async def test_a_clerk_event_delivered_ten_times_at_once_makes_one_user_and_answers_200(
    client: httpx.AsyncClient, engine: AsyncEngine, fake_clerk: FakeClerk
) -> None:
    clerk_id = "user_" + uuid.uuid4().hex[:24]
    body, headers = fake_clerk.signed_webhook(
        "user.created", user_payload(clerk_id, f"burst-{uuid.uuid4().hex[:8]}@example.com")
    )
    try:
        responses = await _burst(client, "/api/v1/webhooks/clerk", (body, headers))

        assert _statuses(responses) == [(200, "duplicate")] * (BURST - 1) + [(200, "processed")]
        async with engine.connect() as connection:
            users = await connection.scalar(
                select(func.count()).select_from(User).where(User.clerk_id == clerk_id)
            )
        assert users == 1
    finally:
        async with engine.connect() as connection:
            user_ids = list(await connection.scalars(select(User.id).where(User.clerk_id == clerk_id)))
        await cleanup(engine, user_ids, [("clerk", headers["svix-id"])])


@pytest.mark.parametrize("event_id", ["x" * 256, "msg with spaces"], ids=["too-long", "spaces"])
async def test_a_clerk_event_with_an_unusable_id_is_400_and_stores_nothing(
    event_id: str, client: httpx.AsyncClient, engine: AsyncEngine, fake_clerk: FakeClerk
) -> None:
    clerk_id = "user_" + uuid.uuid4().hex[:24]
    body, headers = fake_clerk.signed_webhook(
        "user.created", user_payload(clerk_id, f"id-{uuid.uuid4().hex[:8]}@example.com"), msg_id=event_id
    )

    answer = await client.post("/api/v1/webhooks/clerk", content=body, headers=headers)

    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_event_id")
    async with engine.connect() as connection:
        users = await connection.scalar(
            select(func.count()).select_from(User).where(User.clerk_id == clerk_id)
        )
    assert users == 0

"""A burst of one event delivered many times at once (a provider retrying while we are slow) is answered
200 on every database: one delivery applies it, the others are told `duplicate`, credits move once.

MariaDB used to answer most of the burst 503: the inbox's duplicate insert took a shared lock on the
existing row, then asked for an exclusive one, and InnoDB resolved the waiters' upgrades as deadlocks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.session import Database
from app.models import Order, User, WebhookEvent
from tests.factories import bearer
from tests.fakes.clerk import FakeClerk, user_payload
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.committed import cleanup, committed_movements, committed_user, leftovers
from tests.support.payments import BONUS, Step, payment_flow, payment_settings

BURST = 10


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
    return payment_settings(
        database_url,
        fake_stripe,
        fake_razorpay,
        fake_dodo,
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


async def _burst(client: httpx.AsyncClient, path: str, delivery: Delivery) -> list[httpx.Response]:
    body, headers = delivery
    return list(
        await asyncio.gather(*(client.post(path, content=body, headers=headers) for _ in range(BURST)))
    )


def _statuses(responses: list[httpx.Response]) -> list[tuple[int, str]]:
    return sorted((r.status_code, r.json().get("status") or r.json().get("error")) for r in responses)


@pytest.mark.parametrize("provider", ["stripe", "razorpay", "dodo"])
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
    step: Step | None = None
    try:
        flow = payment_flow(provider, fake_stripe, fake_razorpay, fake_dodo)
        purchase = await flow.buy(client, bearer(app.state.container, user))
        [step, *_] = flow.confirmations(purchase)

        responses = await asyncio.gather(*(step.send(client, False) for _ in range(BURST)))

        assert _statuses(responses) == [(200, "duplicate")] * (BURST - 1) + [(200, "processed")]
        assert await committed_movements(engine, user.id) == (BONUS + purchase.credits, [purchase.credits])
        [(_, event_id)] = set(step.sent)
        async with engine.connect() as connection:
            inbox = (
                await connection.execute(
                    select(WebhookEvent.handled_at, WebhookEvent.error).where(
                        WebhookEvent.provider == provider, WebhookEvent.event_id == event_id
                    )
                )
            ).all()
            status = await connection.scalar(
                select(Order.status).where(Order.id == uuid.UUID(purchase.order_id))
            )
        assert [(handled_at is not None, error) for handled_at, error in inbox] == [(True, None)]
        assert status == "paid"
    finally:
        events = sorted(set(step.sent)) if step is not None else []
        await cleanup(engine, [user.id], events)
    assert await leftovers(engine, user.id, events) == 0


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

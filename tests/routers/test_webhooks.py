"""A webhook delivery whose signature does not hold is refused with 400 and leaves an audit row (who
called, which provider, why), committed although the request fails, and never holding the body, the
signature or the secret. (What a refusal changes, or rather does not, is tested per provider in
tests/routers/test_billing.py.)"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import AuditLog, WebhookEvent
from tests.fakes.clerk import FakeClerk
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.http import assert_error
from tests.support.payments import WEBHOOKS, payment_flow, payment_settings

SIGNATURE_HEADERS = {
    "stripe": "Stripe-Signature",
    "razorpay": "X-Razorpay-Signature",
    "dodo": "webhook-signature",
    "clerk": "svix-signature",
}


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
        database_url, fake_stripe, fake_razorpay, fake_dodo, clerk_webhook_secret=fake_clerk.svix_secret
    )


def _tampered(body: bytes) -> bytes:
    """The same event with one field changed: the signature no longer matches."""
    event = json.loads(body)
    event["tampered"] = True
    return json.dumps(event).encode()


async def _count(session: AsyncSession, model: type[Any]) -> int:
    session.expunge_all()
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("provider", ["stripe", "razorpay", "dodo", "clerk"])
async def test_a_refused_delivery_is_audited_without_its_body_or_secrets(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    fake_clerk: FakeClerk,
    provider: str,
) -> None:
    if provider == "clerk":
        email = "refused-clerk@example.com"
        data = {"id": "user_refused", "email_addresses": [{"email_address": email}]}
        body, headers = fake_clerk.signed_webhook("user.created", data)
        path, secret = "/api/v1/webhooks/clerk", fake_clerk.svix_secret
        carried = [email, "user_refused"]
    else:
        flow = payment_flow(provider, fake_stripe, fake_razorpay, fake_dodo)
        purchase = await flow.buy(client, auth)
        body, headers = flow.paid_delivery(purchase)
        path = WEBHOOKS[provider]
        secret = {"stripe": fake_stripe, "razorpay": fake_razorpay, "dodo": fake_dodo}[
            provider
        ].webhook_secret
        carried = [purchase.payment_id]
    events_before = await _count(session, WebhookEvent)

    response = await client.post(path, content=_tampered(body), headers=headers)

    assert_error(response, 400, "invalid_signature")
    assert await _count(session, WebhookEvent) == events_before
    [row] = list(await session.scalars(select(AuditLog).where(AuditLog.action == "webhook.refused")))
    assert (row.actor_id, row.subject_id) == (None, None)
    assert row.ip == "127.0.0.1"  # the caller's address
    assert row.request_id == response.json()["request_id"]
    assert set(row.details) == {"provider", "reason"}
    assert row.details["provider"] == provider
    assert row.details["reason"]
    stored = json.dumps(row.details) + (row.request_id or "")
    signature = {name.lower(): value for name, value in headers.items()}[SIGNATURE_HEADERS[provider].lower()]
    for never in (secret, signature, *carried):
        assert never not in stored

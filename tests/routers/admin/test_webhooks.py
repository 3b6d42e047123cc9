"""The webhook inbox as an admin sees it: GET /admin/webhooks lists stored events by status, and
POST /admin/webhooks/{id}/replay applies a failed one again through the code a live delivery runs,
crediting at most once whatever else arrives.

A live delivery is made to fail the way a database hiccup would (the credit step raises once); the
provider's own events, signed by the fakes, are what is stored and replayed. Amounts are millicredits;
every account starts with the signup bonus."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.models import AuditLog, WebhookEvent, WebhookStatus
from app.services.billing import orders
from tests.factories import bearer, make_user
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.http import assert_error
from tests.support.payments import (
    BONUS,
    WEBHOOKS,
    PaymentFlow,
    Purchase,
    balance,
    order_of,
    payment_flow,
    payment_settings,
    post_webhook,
)

URL = "/api/v1/admin/webhooks"
PROVIDERS = ["stripe", "razorpay", "dodo"]


@pytest.fixture
def settings(
    database_url: str, fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo
) -> Settings:
    return payment_settings(database_url, fake_stripe, fake_razorpay, fake_dodo)


@pytest.fixture
async def admin(session: AsyncSession, settings: Settings, container: Container) -> dict[str, str]:
    return bearer(container, await make_user(session, settings, role="admin"))


def _flow(provider: str, stripe: FakeStripe, razorpay: FakeRazorpay, dodo: FakeDodo) -> PaymentFlow:
    return payment_flow(provider, stripe, razorpay, dodo)


class CreditingFails:
    """The credit step of a paid order raises, as a dropped database connection would, while on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = True
        real = orders.payment_received

        async def payment_received(*args: Any, **kwargs: Any) -> bool:
            if self.on:
                raise OperationalError(
                    "UPDATE credit_accounts", {}, Exception("server closed the connection")
                )
            return await real(*args, **kwargs)

        monkeypatch.setattr(orders, "payment_received", payment_received)


async def _failed_delivery(
    client: httpx.AsyncClient, flow: PaymentFlow, purchase: Purchase, failing: CreditingFails
) -> tuple[bytes, dict[str, str]]:
    """The payment's first confirmation, delivered while crediting fails: 500, stored as failed."""
    delivery = flow.paid_delivery(purchase)
    response = await post_webhook(client, WEBHOOKS[flow.provider], delivery)
    assert_error(response, 500, "webhook_processing_failed")
    failing.on = False
    return delivery


async def _listed(client: httpx.AsyncClient, admin: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await client.get(URL, headers=admin, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _replay_audits(session: AsyncSession) -> list[dict[str, Any]]:
    session.expunge_all()
    statement = select(AuditLog.details).where(AuditLog.action == "webhook.replayed")
    return list(await session.scalars(statement.order_by(AuditLog.created_at)))


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_replaying_a_failed_event_credits_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    auth: dict[str, str],
    admin: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
) -> None:
    flow = _flow(provider, fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    delivery = await _failed_delivery(client, flow, purchase, CreditingFails(monkeypatch))
    assert await balance(client, auth) == BONUS

    [failed] = await _listed(client, admin, status="failed", provider=provider)
    assert failed["status"] == "failed"
    assert failed["handled_at"] is None
    assert "server closed the connection" in failed["error"]
    assert await _listed(client, admin, status="ignored", provider=provider) == []
    assert "payload" not in failed  # customers' details stay in the database

    replayed = await client.post(f"{URL}/{failed['id']}/replay", headers=admin)
    assert replayed.status_code == 200, replayed.text
    assert (replayed.json()["status"], replayed.json()["error"]) == ("processed", None)
    assert replayed.json()["handled_at"] is not None
    assert await balance(client, auth) == BONUS + purchase.credits
    assert (await order_of(client, auth, purchase.order_id))["status"] == "paid"

    # Nothing after that credits again: a second replay, the provider's retry of the same event.
    again = await client.post(f"{URL}/{failed['id']}/replay", headers=admin)
    assert_error(again, 409, "webhook_already_applied")
    retry = await post_webhook(client, WEBHOOKS[provider], delivery)
    assert retry.json() == {"status": "duplicate"}
    assert await balance(client, auth) == BONUS + purchase.credits
    assert await _listed(client, admin, status="failed", provider=provider) == []

    [audited] = await _replay_audits(session)
    assert audited == {
        "webhook_event_id": failed["id"],
        "provider": provider,
        "event_type": failed["event_type"],
        "outcome": "processed",
    }


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_replaying_an_event_whose_news_arrived_since_credits_nothing_more(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    admin: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
) -> None:
    flow = _flow(provider, fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    await _failed_delivery(client, flow, purchase, CreditingFails(monkeypatch))
    [failed] = await _listed(client, admin, status="failed", provider=provider)
    # The provider re-sends the same news under a new event id, and that one is applied.
    resent = await flow.confirmations(purchase)[0].send(client, True)
    assert resent.json() == {"status": "processed"}, resent.text
    assert await balance(client, auth) == BONUS + purchase.credits

    replayed = await client.post(f"{URL}/{failed['id']}/replay", headers=admin)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] in {"processed", "ignored"}
    assert await balance(client, auth) == BONUS + purchase.credits


async def test_a_replay_that_fails_again_keeps_the_event_failed_and_credits_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    auth: dict[str, str],
    admin: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flow = _flow("stripe", fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    failing = CreditingFails(monkeypatch)
    await _failed_delivery(client, flow, purchase, failing)
    [failed] = await _listed(client, admin, status="failed")
    failing.on = True

    replayed = await client.post(f"{URL}/{failed['id']}/replay", headers=admin)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] == "failed"
    assert "server closed the connection" in replayed.json()["error"]
    assert await balance(client, auth) == BONUS
    assert [audit["outcome"] for audit in await _replay_audits(session)] == ["failed"]

    failing.on = False
    assert (await client.post(f"{URL}/{failed['id']}/replay", headers=admin)).json()["status"] == "processed"
    assert await balance(client, auth) == BONUS + purchase.credits


async def _stored(session: AsyncSession, provider: str, status: WebhookStatus) -> WebhookEvent:
    event = WebhookEvent(
        provider=provider,
        event_id=f"evt_{uuid.uuid4().hex}",
        event_type="prediction.succeeded",
        payload={},
        received_at=utcnow(),
        status=status.value,
        handled_at=None if status == WebhookStatus.failed else utcnow(),
        error="boom" if status == WebhookStatus.failed else None,
    )
    session.add(event)
    await session.flush()
    return event


async def test_the_list_filters_pages_and_checks_its_input(
    client: httpx.AsyncClient, session: AsyncSession, admin: dict[str, str]
) -> None:
    ignored = [await _stored(session, "clerk", WebhookStatus.ignored) for _ in range(3)]
    failed = await _stored(session, "replicate", WebhookStatus.failed)
    await _stored(session, "clerk", WebhookStatus.processed)

    first = await client.get(URL, headers=admin, params={"status": "ignored", "limit": 2})
    second = await client.get(
        URL, headers=admin, params={"status": "ignored", "limit": 2, "cursor": first.json()["next_cursor"]}
    )
    assert second.json()["next_cursor"] is None
    paged = [item["id"] for item in first.json()["items"] + second.json()["items"]]
    assert sorted(paged) == sorted(str(event.id) for event in ignored)
    both = await _listed(client, admin, status=["failed", "ignored"])
    assert len(both) == 4
    assert [item["id"] for item in await _listed(client, admin, provider="replicate")] == [str(failed.id)]

    assert_error(await client.get(URL, headers=admin, params={"status": "lost"}), 422, "validation_error")
    assert_error(await client.get(URL, headers=admin, params={"cursor": "nope"}), 400, "invalid_cursor")
    assert_error(await client.get(URL, headers=admin, params={"limit": 0}), 422, "validation_error")
    assert_error(await client.post(f"{URL}/{uuid.uuid4()}/replay", headers=admin), 404, "not_found")
    assert_error(await client.post(f"{URL}/not-an-id/replay", headers=admin), 422, "validation_error")
    # Replicate's events only wake a job that polls anyway: there is nothing to replay.
    refused = await client.post(f"{URL}/{failed.id}/replay", headers=admin)
    assert_error(refused, 409, "webhook_not_replayable")
    assert await _replay_audits(session) == []

"""Operator alerts against a fake Slack-compatible receiver: each of the five conditions sends one
message per window (across processes), none below its threshold or without ALERT_WEBHOOK_URL, and a
receiver that is down or hangs holds up no other housekeeping step."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import httpx
import pytest
import respx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.integrations.images.base import EngineError
from app.integrations.images.clipdrop import ClipDropRemover
from app.integrations.images.replicate import ReplicateClient
from app.metrics import ProviderOutages
from app.models import AdjustmentKind, AuditLog, Job, JobStatus, OrderAdjustment, User, WebhookEvent
from app.services import alerts, audit
from app.tasks import maintenance
from tests.conftest import make_settings
from tests.factories import make_order

RECEIVER = "https://hooks.example.test/services/T000/B000/alerts"
WINDOW = timedelta(seconds=60)


def alert_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "alert_webhook_url": RECEIVER,
        "alert_window_seconds": int(WINDOW.total_seconds()),
        "alert_timeout_seconds": 0.5,
        "alert_attempts": 2,
        "alert_backoff_seconds": 0,
        "alert_webhook_failed_minutes": 10,
        "alert_job_failure_rate": 0.5,
        "alert_job_failure_min_jobs": 4,
        "alert_refunds_per_hour": 2,
        "alert_provider_errors": 3,
        "alert_readyz_failing_seconds": 30,
        **overrides,
    }
    return make_settings(**values)


@pytest.fixture
async def alerting(database_url: str, database: Database) -> AsyncIterator[Container]:
    container = Container.build(alert_settings(database_url), database)
    yield container
    await container.aclose()


@pytest.fixture
def receiver(outside_http: respx.MockRouter) -> respx.Route:
    return outside_http.post(RECEIVER).mock(return_value=httpx.Response(200, text="ok"))


def sent_kinds(route: respx.Route) -> list[str]:
    kinds = []
    for call in route.calls:
        body = json.loads(call.request.content)
        assert body["text"]  # what every Slack-compatible receiver shows
        kinds.append(body["blocks"][-1]["elements"][0]["text"].removeprefix("alert `").removesuffix("`"))
    return kinds


async def run_round(container: Container, now: datetime) -> None:
    """One alert round, its delivery awaited."""
    await alerts.run(container, now)
    if container.alert_delivery is not None:
        await container.alert_delivery


# --- the conditions, each arranged above or just below its threshold ------------------------------

Arrange = Callable[[Container, AsyncSession, User, pytest.MonkeyPatch, bool], Awaitable[None]]


async def failed_webhooks(
    container: Container, session: AsyncSession, user: User, monkeypatch: pytest.MonkeyPatch, above: bool
) -> None:
    # Failed 30 min ago (past the 10 min) or 2 min ago (the provider is still retrying it).
    age = timedelta(minutes=30 if above else 2)
    session.add(
        WebhookEvent(
            provider="stripe",
            event_id=f"evt_{uuid.uuid4().hex}",
            event_type="checkout.session.completed",
            payload={"id": "evt"},
            received_at=utcnow() - age,
            error="OperationalError: database is locked",
            status="failed",
        )
    )
    await session.flush()


async def failing_jobs(
    container: Container, session: AsyncSession, user: User, monkeypatch: pytest.MonkeyPatch, above: bool
) -> None:
    failed = 2 if above else 1  # of 4: 50% reaches the 0.5 rate, 25% does not
    statuses = [JobStatus.failed] * failed + [JobStatus.completed] * (4 - failed) + [JobStatus.pending]
    for status in statuses:
        session.add(Job(user_id=user.id, kind="remove_background", status=status.value))
    await session.flush()


async def refunds(
    container: Container, session: AsyncSession, user: User, monkeypatch: pytest.MonkeyPatch, above: bool
) -> None:
    order = await make_order(session, user)
    kinds = [AdjustmentKind.refund, AdjustmentKind.chargeback] if above else [AdjustmentKind.refund]
    for kind in [*kinds, AdjustmentKind.chargeback_won]:  # a won dispute is no alarm
        session.add(OrderAdjustment(order_id=order.id, key=f"adj_{uuid.uuid4().hex}", kind=kind.value))
    await session.flush()


async def provider_outages(
    container: Container, session: AsyncSession, user: User, monkeypatch: pytest.MonkeyPatch, above: bool
) -> None:
    for _ in range(3 if above else 2):
        container.provider_outages.record("replicate", utcnow() - timedelta(minutes=1))
    container.provider_outages.record("clipdrop", utcnow() - timedelta(hours=1))  # out of the 15 min


async def readiness_failing(
    container: Container, session: AsyncSession, user: User, monkeypatch: pytest.MonkeyPatch, above: bool
) -> None:
    async def unreachable() -> None:
        raise ConnectionRefusedError("database down")

    monkeypatch.setattr(container.database, "ping", unreachable)
    # An earlier round saw it fail: 5 min ago (past the 30 s), or 10 s ago.
    since = utcnow() - (timedelta(minutes=5) if above else timedelta(seconds=10))
    container.readiness_record.record(True, "database unreachable", since)


CONDITIONS: dict[str, Arrange] = {
    "webhooks_failing": failed_webhooks,
    "job_failures": failing_jobs,
    "refunds_disputes": refunds,
    "provider_errors": provider_outages,
    "readiness_failing": readiness_failing,
}


@pytest.mark.parametrize("kind", list(CONDITIONS))
async def test_each_condition_sends_once_per_window(
    kind: str,
    alerting: Container,
    session: AsyncSession,
    user: User,
    receiver: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await CONDITIONS[kind](alerting, session, user, monkeypatch, True)
    start = utcnow()
    await run_round(alerting, start)
    assert sent_kinds(receiver) == [kind]

    await run_round(alerting, start + timedelta(seconds=1))
    await run_round(alerting, start + WINDOW - timedelta(seconds=1))
    assert sent_kinds(receiver) == [kind]  # the condition holds, the window is not over

    await run_round(alerting, start + WINDOW)
    assert sent_kinds(receiver) == [kind, kind]


@pytest.mark.parametrize("kind", list(CONDITIONS))
async def test_no_alert_below_the_threshold(
    kind: str,
    alerting: Container,
    session: AsyncSession,
    user: User,
    receiver: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await CONDITIONS[kind](alerting, session, user, monkeypatch, False)
    await run_round(alerting, utcnow())
    assert sent_kinds(receiver) == []


async def test_two_processes_send_one_message(
    database_url: str,
    database: Database,
    alerting: Container,
    session: AsyncSession,
    user: User,
    receiver: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await failed_webhooks(alerting, session, user, monkeypatch, True)
    first = Container.build(alert_settings(database_url), database)
    second = Container.build(alert_settings(database_url), database)
    try:
        now = utcnow()
        await run_round(first, now)
        await run_round(second, now + timedelta(seconds=1))
    finally:
        await first.aclose()
        await second.aclose()
    assert sent_kinds(receiver) == ["webhooks_failing"]


async def test_without_a_url_nothing_is_sent(
    database_url: str,
    database: Database,
    session: AsyncSession,
    user: User,
    outside_http: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = Container.build(alert_settings(database_url, alert_webhook_url=None), database)
    try:
        for arrange in CONDITIONS.values():
            await arrange(container, session, user, monkeypatch, True)
        assert container.alert_sender is None
        assert await alerts.run(container, utcnow()) == []
        assert container.alert_delivery is None
    finally:
        await container.aclose()
    assert outside_http.calls.call_count == 0  # any request at all would also fail as unmocked


async def test_a_receiver_that_is_down_is_retried_and_the_alert_kept_for_the_next_round(
    alerting: Container,
    session: AsyncSession,
    user: User,
    receiver: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await failed_webhooks(alerting, session, user, monkeypatch, True)
    receiver.side_effect = [httpx.ConnectTimeout("down"), httpx.Response(500)]
    now = utcnow()
    await run_round(alerting, now)
    assert receiver.call_count == 2  # ALERT_ATTEMPTS, each bounded by ALERT_TIMEOUT_SECONDS
    timeouts = [call.request.extensions["timeout"] for call in receiver.calls]
    assert all(timeout["read"] == timeout["connect"] == 0.5 for timeout in timeouts)

    receiver.side_effect = None  # the receiver is back: the undelivered alert goes out, within the window
    await run_round(alerting, now + timedelta(seconds=1))
    assert sent_kinds(receiver)[-1:] == ["webhooks_failing"]
    assert receiver.call_count == 3


async def test_a_hanging_receiver_delays_no_other_housekeeping_step(
    alerting: Container,
    session: AsyncSession,
    user: User,
    receiver: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await failed_webhooks(alerting, session, user, monkeypatch, True)
    reached, never = asyncio.Event(), asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        reached.set()
        await never.wait()
        return httpx.Response(200)

    receiver.side_effect = hang
    expired = await audit.record(session, action="login.succeeded", subject_id=user.id)
    expired.created_at = utcnow() - timedelta(days=alerting.settings.audit_log_retention_days + 1)
    await session.flush()

    await maintenance.run_once(alerting)  # alerts is its first step

    delivery = alerting.alert_delivery
    assert delivery is not None
    assert not delivery.done()
    session.expunge_all()
    assert await session.scalar(select(AuditLog).where(AuditLog.id == expired.id)) is None  # ...the sweep ran
    # A second round neither waits for it nor starts another delivery.
    assert await alerts.run(alerting, utcnow() + 2 * WINDOW) == []
    assert reached.is_set()
    assert alerting.alert_delivery is delivery


@pytest.mark.parametrize("provider", ["replicate", "clipdrop"])
async def test_provider_5xx_and_timeouts_are_counted_not_refusals(
    provider: str, outside_http: respx.MockRouter
) -> None:
    outages = ProviderOutages()
    async with httpx.AsyncClient() as http:
        if provider == "replicate":
            client = ReplicateClient(
                http, api_token="r8_test", base_url="https://replicate.test", outages=outages
            )
            route = outside_http.get("https://replicate.test/v1/predictions/p1")
            call: Callable[[], Awaitable[object]] = lambda: client.get_prediction("p1")  # noqa: E731
        else:
            remover = ClipDropRemover(
                http, api_key="cd_test", base_url="https://clipdrop.test", outages=outages
            )
            route = outside_http.post(url__startswith="https://clipdrop.test/")
            png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
            call = lambda: remover.remove_background(png)  # noqa: E731
        for answer in (
            httpx.Response(503),
            httpx.ConnectTimeout("slow"),
            httpx.Response(400),
            httpx.Response(429),
        ):
            route.side_effect = [answer]
            with pytest.raises(EngineError):
                await call()
    assert outages.counts_since(utcnow() - timedelta(minutes=1)) == {provider: 2}

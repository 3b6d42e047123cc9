from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.main import create_app
from app.models import WebhookEvent, WebhookStatus
from tests.conftest import make_settings
from tests.support.http import assert_error, sample


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "webhooks": "ok"}}


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    image_id = uuid.uuid4()
    await client.get(f"/api/v1/images/{image_id}")  # 401: no credentials
    await client.get("/no/such/path")
    text = (await client.get("/metrics")).text
    assert str(image_id) not in text  # ids never become label values
    route = "/api/v1/images/{image_id}"
    assert sample(text, "pixforge_http_requests_total", route=route, status="401") == 1
    assert sample(text, "pixforge_http_requests_total", route="unmatched", status="404") == 1
    assert sample(text, "pixforge_http_request_duration_seconds_count", route=route, method="GET") == 1


async def test_metrics_can_be_turned_off(database_url: str, database: Database) -> None:
    async with client_for(
        make_settings(database_url=database_url, metrics_enabled=False), database
    ) as client:
        assert_error(await client.get("/metrics"), 404, "not_found")


async def test_metrics_behind_a_token(database_url: str, database: Database) -> None:
    settings = make_settings(database_url=database_url, metrics_token="scrape-me-please")
    async with client_for(settings, database) as client:
        assert_error(await client.get("/metrics"), 401, "unauthenticated")
        wrong = {"Authorization": "Bearer scrape-me-not"}
        assert_error(await client.get("/metrics", headers=wrong), 401, "unauthenticated")
        right = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me-please"})
        assert right.status_code == 200
        assert right.headers["content-type"].startswith("text/plain")


async def test_readyz_names_an_unreachable_redis(database_url: str, database: Database) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(database_url=database_url, redis_url=f"redis://127.0.0.1:{port}/0")
    async with client_for(settings, database) as client:
        body = assert_error(await client.get("/readyz"), 503, "service_unavailable")
        assert body["checks"] == {"database": "ok", "redis": "unreachable", "webhooks": "ok"}
        assert body["detail"] == "Not ready: redis unreachable."


@pytest.mark.skipif(not os.environ.get("TEST_REDIS_URL"), reason="needs TEST_REDIS_URL")
async def test_readyz_checks_redis_when_configured(database_url: str, database: Database) -> None:
    settings = make_settings(database_url=database_url, redis_url=os.environ["TEST_REDIS_URL"])
    async with client_for(settings, database) as client:
        response = await client.get("/readyz")
        assert response.json() == {
            "status": "ok",
            "checks": {"database": "ok", "redis": "ok", "webhooks": "ok"},
        }


async def _stored_event(session: AsyncSession, status: WebhookStatus, age: timedelta) -> None:
    """An event as the inbox leaves it (`failed`: its error kept, not handled), received `age` ago."""
    failed = status == WebhookStatus.failed
    session.add(
        WebhookEvent(
            provider="stripe",
            event_id=f"evt_{uuid.uuid4().hex}",
            event_type="checkout.session.completed",
            payload={"id": "evt"},
            received_at=utcnow() - age,
            handled_at=None if failed else utcnow() - age,
            error="OperationalError: database is locked" if failed else None,
            status=status.value,
        )
    )
    await session.flush()


async def test_readyz_is_503_when_failed_webhook_events_pile_up(
    database_url: str, database: Database, session: AsyncSession
) -> None:
    settings = make_settings(
        database_url=database_url, readyz_failed_webhook_age_seconds=600, readyz_failed_webhook_count=2
    )
    async with client_for(settings, database) as client:
        await _stored_event(session, WebhookStatus.failed, timedelta(minutes=20))
        await _stored_event(session, WebhookStatus.failed, timedelta(minutes=1))  # the provider retries
        await _stored_event(session, WebhookStatus.ignored, timedelta(hours=2))
        await _stored_event(session, WebhookStatus.processed, timedelta(hours=2))
        assert (await client.get("/readyz")).json()["checks"]["webhooks"] == "ok"  # 1 < 2

        await _stored_event(session, WebhookStatus.failed, timedelta(hours=3))
        body = assert_error(await client.get("/readyz"), 503, "service_unavailable")
        assert body["checks"] == {"database": "ok", "webhooks": "failed_backlog"}
        assert body["detail"] == (
            "Not ready: 2 webhook event(s) failed more than 600 s ago"
            " (GET /api/v1/admin/webhooks?status=failed)."
        )

    off = make_settings(database_url=database_url, readyz_failed_webhook_count=0)
    async with client_for(off, database) as client:
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["checks"] == {"database": "ok"}


@contextlib.asynccontextmanager
async def client_for(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    container = Container.build(settings, database)
    try:
        transport = httpx.ASGITransport(app=create_app(settings, database, container))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        await container.aclose()

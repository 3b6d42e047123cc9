"""Hairstyle try-on: styles, 202 + background job on a fake Replicate, webhook wake-up, status and SSE."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.models import Job, JobStatus, WebhookEvent
from app.services.users import create_user
from tests.conftest import make_settings
from tests.fakes.replicate import FakeReplicate
from tests.support.http import assert_error
from tests.support.images import photo_like

BONUS = 10.0


@pytest.fixture
def settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake_replicate: FakeReplicate
) -> Settings:
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url="https://api.example.com",
        replicate_api_token=fake_replicate.api_token,
        replicate_webhook_secret=fake_replicate.webhook_secret,
        replicate_poll_interval_seconds=0.01,
        job_retry_base_seconds=0,
        rate_limit_generate_per_user="3/minute",
    )


async def style_id(client: httpx.AsyncClient) -> str:
    styles = (await client.get("/api/v1/styles")).json()
    assert len(styles) >= 5
    return str(styles[0]["id"])


async def upload(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    response = await client.post(
        "/api/v1/uploads", headers=auth, files={"file": ("me.png", photo_like(96, 96), "image/png")}
    )
    return str(response.json()["id"])


async def test_generation_of_three_views_completes_and_charges_per_view(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate, session: AsyncSession
) -> None:
    body = {
        "style_id": await style_id(client),
        "upload_id": await upload(client, auth),
        "views": ["front", "left", "back"],
    }
    accepted = await client.post("/api/v1/image/generate", headers=auth, json=body)
    assert accepted.status_code == 202, accepted.text
    image_id = accepted.json()["image_id"]
    status = (await client.get(f"/api/v1/image/status/{image_id}", headers=auth)).json()
    assert status["status"] == "COMPLETED", status
    assert [output["view"] for output in status["outputs"]] == ["front", "left", "back"]
    assert len(fake_replicate.created) == 3
    sent = fake_replicate.created[0]
    assert sent["webhook"] == "https://api.example.com/api/v1/webhooks/replicate"
    assert "front view" in sent["input"]["prompt"]
    assert sent["input"]["image_input"][0].startswith("https://api.example.com/api/v1/files/")
    balance = (await client.get("/api/v1/users/credits", headers=auth)).json()["credits"]
    assert balance == BONUS - 3
    # The outputs were copied into our storage: their URLs are ours, not Replicate's temporary ones.
    assert all("replicate.delivery" not in output["url"] for output in status["outputs"])


async def test_a_failed_prediction_fails_the_job_and_refunds(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate
) -> None:
    fake_replicate.fail_next_prediction("NSFW content detected")
    body = {"style_id": await style_id(client), "image_input_url": "https://cdn.example.com/me.jpg"}
    image_id = (await client.post("/api/v1/image/generate", headers=auth, json=body)).json()["image_id"]
    status = (await client.get(f"/api/v1/image/status/{image_id}", headers=auth)).json()
    assert (status["status"], status["error_code"]) == ("FAILED", "generation_failed")
    assert "NSFW" in status["error"]
    assert (await client.get("/api/v1/users/credits", headers=auth)).json()["credits"] == BONUS


async def test_replicate_5xx_is_retried(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate
) -> None:
    fake_replicate.fail_next(500)
    body = {"style_id": await style_id(client), "image_input_url": "https://cdn.example.com/me.jpg"}
    image_id = (await client.post("/api/v1/image/generate", headers=auth, json=body)).json()["image_id"]
    status = (await client.get(f"/api/v1/image/status/{image_id}", headers=auth)).json()
    assert (status["status"], status["attempts"]) == ("COMPLETED", 2)


async def test_bad_requests_reserve_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
) -> None:
    style = await style_id(client)
    cases = [
        ({"style_id": str(uuid.uuid4()), "image_input_url": "https://x.example/a.jpg"}, 404, "not_found"),
        ({"style_id": style}, 400, "bad_request"),
        ({"style_id": style, "image_input_url": "http://insecure.example/a.jpg"}, 422, "validation_error"),
        ({"style_id": style, "image_input_url": "file:///etc/passwd"}, 422, "validation_error"),
        (
            {"style_id": style, "image_input_url": "https://x.example/a.jpg", "views": ["top"]},
            422,
            "validation_error",
        ),
        ({"style_id": style, "upload_id": str(uuid.uuid4())}, 404, "not_found"),
    ]
    for body, status, error in cases:
        assert_error(await client.post("/api/v1/image/generate", headers=auth, json=body), status, error)
    assert await session.scalar(select(Job)) is None
    assert (await client.get("/api/v1/users/credits", headers=auth)).json()["credits"] == BONUS


async def test_rate_limited_per_user(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    body = {"style_id": await style_id(client), "image_input_url": "https://cdn.example.com/me.jpg"}
    statuses = [
        (await client.post("/api/v1/image/generate", headers=auth, json=body)).status_code for _ in range(4)
    ]
    assert statuses == [202, 202, 202, 429]


async def test_not_configured_is_503_and_reserves_nothing(
    database_url: str, database: object, session: AsyncSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from app.db.session import Database
    from app.main import create_app

    assert isinstance(database, Database)
    settings = make_settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("d"))
    container = Container.build(settings, database)
    user = await create_user(session, settings, email="nogen@example.com", email_verified_at=utcnow())
    headers = {"Authorization": f"Bearer {container.tokens.issue(user.id, 'access')[0]}"}
    app = create_app(settings, database, container)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        body = {"style_id": await style_id(client), "image_input_url": "https://cdn.example.com/me.jpg"}
        assert_error(
            await client.post("/api/v1/image/generate", headers=headers, json=body),
            503,
            "provider_not_configured",
        )
        assert (await client.get("/api/v1/users/credits", headers=headers)).json()["credits"] == BONUS
    await container.aclose()


async def test_webhook_is_verified_and_recorded(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate, session: AsyncSession
) -> None:
    body = {"style_id": await style_id(client), "image_input_url": "https://cdn.example.com/me.jpg"}
    image_id = (await client.post("/api/v1/image/generate", headers=auth, json=body)).json()["image_id"]
    job = await session.get_one(Job, uuid.UUID(image_id))
    assert job.provider_job_id is not None
    payload, headers = fake_replicate.signed_webhook(job.provider_job_id)
    response = await client.post("/api/v1/webhooks/replicate", content=payload, headers=headers)
    assert response.status_code == 200, response.text
    again = await client.post("/api/v1/webhooks/replicate", content=payload, headers=headers)
    assert again.json() == {"status": "duplicate"}
    tampered = await client.post("/api/v1/webhooks/replicate", content=payload + b" ", headers=headers)
    assert_error(tampered, 400, "invalid_signature")
    events = list(await session.scalars(select(WebhookEvent).where(WebhookEvent.provider == "replicate")))
    assert len(events) == 1


async def test_status_events_stream_until_done(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    body = {"style_id": await style_id(client), "image_input_url": "https://cdn.example.com/me.jpg"}
    image_id = (await client.post("/api/v1/image/generate", headers=auth, json=body)).json()["image_id"]
    response = await client.get(f"/api/v1/images/{image_id}/events", headers=auth)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block.strip()]
    last = json.loads(events[-1].split("data: ", 1)[1])
    assert events[-1].startswith("event: status")
    assert last["status"] == JobStatus.completed.value
    other = await client.get(f"/api/v1/images/{uuid.uuid4()}/events", headers=auth)
    assert_error(other, 404, "not_found")


async def test_a_retried_generation_starts_one_job(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate, session: AsyncSession
) -> None:
    body = {"style_id": await style_id(client), "image_input_url": "https://cdn.example.com/me.jpg"}
    headers = {**auth, "Idempotency-Key": "try-on-1"}
    answers = [await client.post("/api/v1/image/generate", headers=headers, json=body) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [202, 202]
    assert answers[1].json() == answers[0].json()
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert len(list(await session.scalars(select(Job)))) == 1
    assert len(fake_replicate.created) == 1
    assert (await client.get("/api/v1/users/credits", headers=auth)).json()["credits"] == BONUS - 1


async def test_the_daily_generation_quota_refuses_a_try_on_past_it_and_reserves_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
) -> None:
    settings.clone_generation_daily_quotas = {"free": 1, "pro": 100}
    body = {"style_id": await style_id(client), "upload_id": await upload(client, auth), "views": ["front"]}
    assert (await client.post("/api/v1/image/generate", headers=auth, json=body)).status_code == 202
    before = (await client.get("/api/v1/users/credits", headers=auth)).json()["credits"]

    refused = await client.post("/api/v1/image/generate", headers=auth, json=body)

    assert_error(refused, 429, "quota_exceeded")
    assert (await client.get("/api/v1/users/credits", headers=auth)).json()["credits"] == before


async def test_a_plan_without_generations_is_told_which_plan_has_them(
    client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
) -> None:
    settings.clone_generation_daily_quotas = {"free": 0, "pro": 100}
    body = {"style_id": await style_id(client), "upload_id": await upload(client, auth), "views": ["front"]}

    refused = await client.post("/api/v1/image/generate", headers=auth, json=body)

    assert assert_error(refused, 403, "plan_required")["plans"] == ["pro"]

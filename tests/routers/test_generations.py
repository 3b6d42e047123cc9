"""Text to image over HTTP (POST /generations) on a fake Replicate: the default model or a personal one
(its trained version, its trigger word woven in), the prompt enhanced first through the official LLM SDKs
talking to fake servers, charged per image, released on failure, refused by the daily quota, by another
user's model and by bad input with nothing reserved; the images land in the gallery and in our storage."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.models import CloneModel, CreditLedgerEntry, Job, JobStatus, User
from tests.conftest import make_settings
from tests.factories import bearer, make_clone_model, make_user
from tests.fakes.llm import FAKES
from tests.fakes.replicate import ALL_NSFW, FLUX_SCHNELL, FakeReplicate
from tests.support.design import app_client
from tests.support.http import assert_error

GENERATIONS = "/api/v1/generations"
CREDITS = "/api/v1/users/credits"
QUOTAS = "/api/v1/users/me/quotas"
BONUS = 10.0
PRICE = 1.5
PROMPT_LIMIT = 300
CLONE = "acme-app/clone-u-8f3a2c"
ENHANCED = "A cinematic portrait on the moon, soft rim light, 85mm lens, stars behind."


def generation_settings(
    database_url: str, data_dir: Path, fake_replicate: FakeReplicate, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "public_base_url": "https://api.example.com",
        "replicate_api_token": fake_replicate.api_token,
        "replicate_webhook_secret": fake_replicate.webhook_secret,
        "replicate_poll_interval_seconds": 0.01,
        "job_retry_base_seconds": 0,
        "generation_cost_credits": str(PRICE),
        "generation_prompt_max_chars": PROMPT_LIMIT,
        "clone_generation_daily_quotas": "free=3,pro=100,starter=0",
        "clone_generation_max_outputs": "free=4,pro=unlimited,lite=1",
        **overrides,
    }
    return make_settings(**values)


@pytest.fixture
def settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake_replicate: FakeReplicate
) -> Settings:
    return generation_settings(database_url, tmp_path_factory.mktemp("data"), fake_replicate)


async def ready_model(
    session: AsyncSession, user: User, trigger_word: str = "zqxprsn", **fields: Any
) -> CloneModel:
    return await make_clone_model(
        session,
        user,
        [],
        status="ready",
        trigger_word=trigger_word,
        provider_model=CLONE,
        **fields,
    )


async def balance(client: httpx.AsyncClient, auth: dict[str, str]) -> float:
    return float((await client.get(CREDITS, headers=auth)).json()["credits"])


async def job_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


async def finished(client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """POST the generation (202), then its status as a client polls it."""
    accepted = await client.post(GENERATIONS, headers=auth, json=body)
    assert accepted.status_code == 202, accepted.text
    answer = accepted.json()
    assert answer["status"] in (JobStatus.pending.value, JobStatus.processing.value)
    assert answer["status_url"] == f"/api/v1/images/{answer['image_id']}"
    status = await client.get(answer["status_url"], headers=auth)
    assert status.status_code == 200, status.text
    return dict(status.json())


async def test_the_default_model_makes_every_image_asked_for_and_each_is_charged(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate
) -> None:
    body = {
        "prompt": "  a lighthouse\nin a storm ",
        "aspect_ratio": "16:9",
        "num_outputs": 3,
        "seed": 42,
        "guidance": 3.5,
        "negative_prompt": "blurry",
    }
    image = await finished(client, auth, body)
    assert image["status"] == JobStatus.completed.value, image
    assert image["kind"] == "generation"
    assert [output["view"] for output in image["outputs"]] == ["image-1", "image-2", "image-3"]
    assert (image["prompt"], image["enhanced_prompt"], image["model_id"]) == (
        "a lighthouse in a storm",
        None,
        None,
    )
    assert image["credits"] == 3 * PRICE
    assert await balance(client, auth) == BONUS - 3 * PRICE
    # flux-schnell's own endpoint, with only the inputs it takes (no guidance, no negative prompt).
    [sent] = fake_replicate.created
    assert "version" not in sent
    assert fake_replicate.predictions[only_prediction(fake_replicate)]["model"] == FLUX_SCHNELL
    assert sent["input"] == {
        "prompt": "a lighthouse in a storm",
        "aspect_ratio": "16:9",
        "num_outputs": 3,
        "output_format": "webp",
        "seed": 42,
    }
    assert sent["webhook"] == "https://api.example.com/api/v1/webhooks/replicate"
    # Copied into our storage: our URLs, which serve the images.
    for output in image["outputs"]:
        assert urlsplit(output["url"]).netloc == "api.example.com"
        served = await client.get(urlsplit(output["url"]).path + "?" + urlsplit(output["url"]).query)
        assert served.status_code == 200
        assert served.content.startswith(b"\x89PNG")
    gallery = (await client.get("/api/v1/images?kind=generation", headers=auth)).json()["items"]
    assert [item["id"] for item in gallery] == [image["id"]]
    assert gallery[0]["prompt"] == "a lighthouse in a storm"


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def only_prediction(fake_replicate: FakeReplicate) -> str:
    [prediction_id] = fake_replicate.predictions
    return prediction_id


@pytest.mark.parametrize(
    ("prompt", "sent"),
    [
        pytest.param("me as an astronaut", "zqxprsn, me as an astronaut", id="woven-in"),
        pytest.param("ZQXPRSN as an astronaut", "ZQXPRSN as an astronaut", id="already-there"),
    ],
)
async def test_a_personal_model_runs_its_trained_version_with_its_trigger_word(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicate,
    session: AsyncSession,
    user: User,
    prompt: str,
    sent: str,
) -> None:
    version = fake_replicate.add_trained_version(CLONE)
    model = await ready_model(session, user, provider_version=version)
    image = await finished(client, auth, {"prompt": prompt, "model_id": str(model.id), "guidance": 2.5})
    assert image["status"] == JobStatus.completed.value, image
    assert image["model_id"] == str(model.id)
    assert image["prompt"] == prompt
    [created] = fake_replicate.created
    assert created["version"] == version
    assert created["input"]["prompt"] == sent
    assert created["input"]["guidance_scale"] == 2.5
    assert created["input"]["lora_scale"] == 1.0
    assert await balance(client, auth) == BONUS - PRICE


async def test_a_model_that_is_not_usable_is_refused_and_nothing_is_reserved(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicate,
    session: AsyncSession,
    user: User,
    settings: Settings,
) -> None:
    version = fake_replicate.add_trained_version(CLONE)
    someone = await make_user(session, settings)
    theirs = await ready_model(session, someone, provider_version=version)
    training = await make_clone_model(session, user, [], status="training")
    failed = await make_clone_model(session, user, [], status="failed", error_message="CUDA out of memory")
    cases = [
        (theirs.id, 404, "not_found"),
        (uuid.uuid4(), 404, "not_found"),
        (training.id, 409, "model_not_ready"),
        (failed.id, 409, "model_not_ready"),
    ]
    for model_id, status, error in cases:
        body = {"prompt": "me on the moon", "model_id": str(model_id)}
        assert_error(await client.post(GENERATIONS, headers=auth, json=body), status, error)
    assert await job_count(session) == 0
    assert fake_replicate.created == []
    assert await balance(client, auth) == BONUS


BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "validation_error"),
    ({"prompt": ""}, "validation_error"),
    ({"prompt": "x" * (PROMPT_LIMIT + 1)}, "invalid_generation"),  # past the setting
    ({"prompt": "a cat", "negative_prompt": "y" * (PROMPT_LIMIT + 1)}, "invalid_generation"),
    ({"prompt": "\u200b\x1b \n"}, "invalid_prompt"),  # nothing visible once cleaned
    ({"prompt": "a\x00cat"}, "validation_error"),
    ({"prompt": "a cat", "num_outputs": 0}, "validation_error"),
    ({"prompt": "a cat", "num_outputs": 5}, "validation_error"),
    ({"prompt": "a cat", "num_outputs": 1.5}, "validation_error"),
    ({"prompt": "a cat", "aspect_ratio": "2:1"}, "validation_error"),
    ({"prompt": "a cat", "guidance": 10.5}, "validation_error"),
    ({"prompt": "a cat", "guidance": -0.1}, "validation_error"),
    ({"prompt": "a cat", "seed": -1}, "validation_error"),
    ({"prompt": "a cat", "seed": 2**31}, "validation_error"),
    ({"prompt": "a cat", "seed": "lucky"}, "validation_error"),
    ({"prompt": "a cat", "model_id": "mine"}, "validation_error"),
    ({"prompt": "a cat", "enhance_prompt": "please"}, "validation_error"),
    ({"prompt": "a cat", "num_output": 2}, "validation_error"),  # a misspelt field is not ignored
    (["a cat"], "validation_error"),
]


async def test_bad_input_is_422_and_reserves_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate, session: AsyncSession
) -> None:
    for body, error in BAD_BODIES:
        assert_error(await client.post(GENERATIONS, headers=auth, json=body), 422, error)
    assert await job_count(session) == 0
    assert fake_replicate.created == []
    assert await balance(client, auth) == BONUS


async def test_more_outputs_than_the_setting_allows_is_422(
    settings: Settings, database: Database, auth: dict[str, str], fake_replicate: FakeReplicate
) -> None:
    fewer = settings.model_copy(update={"generation_max_outputs": 2})
    async with app_client(fewer, database) as client:
        response = await client.post(GENERATIONS, headers=auth, json={"prompt": "a cat", "num_outputs": 3})
        assert assert_error(response, 422, "invalid_generation")["max"] == 2
        assert await balance(client, auth) == BONUS
    assert fake_replicate.created == []


@pytest.mark.parametrize(
    ("misbehave", "code", "message"),
    [
        pytest.param(
            lambda fake: fake.fail_next_prediction("CUDA out of memory"),
            "generation_failed",
            "CUDA out of memory",
            id="prediction-failed",
        ),
        pytest.param(
            lambda fake: fake.filter_next_outputs(2), "generation_failed", ALL_NSFW, id="all-filtered"
        ),
    ],
)
async def test_a_failed_generation_gives_the_credits_back(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicate,
    misbehave: Any,
    code: str,
    message: str,
) -> None:
    misbehave(fake_replicate)
    image = await finished(client, auth, {"prompt": "a cat", "num_outputs": 2})
    assert (image["status"], image["error_code"]) == (JobStatus.failed.value, code)
    assert message in image["error"]
    assert image["outputs"] == []
    assert await balance(client, auth) == BONUS
    # A failure gives the day's generation back.
    quotas = {quota["name"]: quota for quota in (await client.get(QUOTAS, headers=auth)).json()["quotas"]}
    assert quotas["generations"]["used"] == 0


async def test_images_the_safety_filter_dropped_are_not_charged(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate, session: AsyncSession
) -> None:
    fake_replicate.filter_next_outputs(1)
    image = await finished(client, auth, {"prompt": "a cat", "num_outputs": 3})
    assert image["status"] == JobStatus.completed.value, image
    assert [output["view"] for output in image["outputs"]] == ["image-1", "image-2"]
    assert image["credits"] == 2 * PRICE
    assert await balance(client, auth) == BONUS - 2 * PRICE
    # One reservation of 3 images, settled once: 2 spent, the third's price back in the same row.
    rows = (
        await session.execute(
            select(CreditLedgerEntry.reason, CreditLedgerEntry.amount)
            .where(CreditLedgerEntry.reason.in_(["job_reserve", "job_capture", "job_release"]))
            .order_by(CreditLedgerEntry.created_at)
        )
    ).all()
    assert [(reason, amount) for reason, amount in rows] == [
        ("job_reserve", -3 * int(PRICE * 1000)),
        ("job_capture", int(PRICE * 1000)),
    ]


async def test_more_than_the_balance_is_402_and_reserves_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate, session: AsyncSession
) -> None:
    # 4 images at 1.5 = 6 credits: the first fits the 10 of the bonus, the second does not.
    body = {"prompt": "a cat", "num_outputs": 4}
    assert (await client.post(GENERATIONS, headers=auth, json=body)).status_code == 202
    assert_error(await client.post(GENERATIONS, headers=auth, json=body), 402, "insufficient_credits")
    assert await job_count(session) == 1
    assert len(fake_replicate.created) == 1
    assert await balance(client, auth) == BONUS - 4 * PRICE


async def test_the_daily_quota_counts_generations_and_refuses_past_it(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicate,
    session: AsyncSession,
    settings: Settings,
    container: Container,
) -> None:
    for _ in range(3):
        assert (await client.post(GENERATIONS, headers=auth, json={"prompt": "a cat"})).status_code == 202
    quotas = {quota["name"]: quota for quota in (await client.get(QUOTAS, headers=auth)).json()["quotas"]}
    assert (quotas["generations"]["used"], quotas["generations"]["remaining"]) == (3, 0)
    refused = await client.post(GENERATIONS, headers=auth, json={"prompt": "a cat"})
    body = assert_error(refused, 429, "quota_exceeded")
    assert moment(str(body["resets_at"])) == moment(quotas["generations"]["resets_at"])
    assert int(refused.headers["retry-after"]) >= 1
    assert await job_count(session) == 3
    assert await balance(client, auth) == BONUS - 3 * PRICE
    # A plan without generations is told which plans have them.
    starter = bearer(container, await make_user(session, settings, plan="starter"))
    denied = assert_error(
        await client.post(GENERATIONS, headers=starter, json={"prompt": "a cat"}), 403, "plan_required"
    )
    assert denied["plans"] == ["free", "pro"]
    assert len(fake_replicate.created) == 3


async def test_more_images_than_the_plan_makes_at_once_is_403_naming_the_plans(
    client: httpx.AsyncClient,
    fake_replicate: FakeReplicate,
    session: AsyncSession,
    settings: Settings,
    container: Container,
) -> None:
    lite = bearer(container, await make_user(session, settings, plan="lite"))
    denied = assert_error(
        await client.post(GENERATIONS, headers=lite, json={"prompt": "a cat", "num_outputs": 2}),
        403,
        "plan_required",
    )
    assert (denied["max"], denied["plans"]) == (1, ["free", "pro"])
    assert await job_count(session) == 0
    assert fake_replicate.created == []
    assert await balance(client, lite) == BONUS
    assert (await client.post(GENERATIONS, headers=lite, json={"prompt": "a cat"})).status_code == 202


@pytest.mark.parametrize("provider", sorted(FAKES))
async def test_an_enhanced_prompt_is_what_the_model_gets_and_both_are_kept(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    database: Database,
    fake_replicate: FakeReplicate,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    provider: str,
) -> None:
    version = fake_replicate.add_trained_version(CLONE)
    model = await ready_model(session, user, provider_version=version)
    with FAKES[provider](default_answer={"prompt": ENHANCED}) as fake_llm:
        settings = generation_settings(
            database_url, tmp_path_factory.mktemp("data"), fake_replicate, **fake_llm.settings()
        )
        async with app_client(settings, database) as client:
            body = {"prompt": "me on the moon", "model_id": str(model.id), "enhance_prompt": True}
            image = await finished(client, auth, body)
        [asked] = fake_llm.requests
    assert image["status"] == JobStatus.completed.value, image
    assert "me on the moon" in json.dumps(asked)
    assert (image["prompt"], image["enhanced_prompt"]) == ("me on the moon", ENHANCED)
    [created] = fake_replicate.created
    assert created["input"]["prompt"] == f"zqxprsn, {ENHANCED}"


async def test_enhancement_without_an_llm_key_is_503_and_reserves_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate, session: AsyncSession
) -> None:
    body = {"prompt": "a cat", "enhance_prompt": True}
    assert_error(await client.post(GENERATIONS, headers=auth, json=body), 503, "provider_not_configured")
    assert await job_count(session) == 0
    assert fake_replicate.created == []
    assert await balance(client, auth) == BONUS


async def test_without_replicate_it_is_503(
    database_url: str, database: Database, tmp_path_factory: pytest.TempPathFactory, auth: dict[str, str]
) -> None:
    unconfigured = make_settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"))
    async with app_client(unconfigured, database) as client:
        response = await client.post(GENERATIONS, headers=auth, json={"prompt": "a cat"})
        assert_error(response, 503, "provider_not_configured")
        assert await balance(client, auth) == BONUS


async def test_a_retried_request_starts_one_generation_and_charges_once(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicate, session: AsyncSession
) -> None:
    for _ in range(2):
        assert (await client.post(GENERATIONS, headers=auth, json={"prompt": "a dog"})).status_code == 202
    headers = {**auth, "Idempotency-Key": "gen-1"}
    body = {"prompt": "a cat", "num_outputs": 2}
    # The first fills the day's quota of 3: its retry is still given the first answer.
    answers = [await client.post(GENERATIONS, headers=headers, json=body) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [202, 202]
    assert answers[1].json() == answers[0].json()
    assert answers[1].headers["idempotent-replayed"] == "true"
    reused = await client.post(GENERATIONS, headers=headers, json={**body, "num_outputs": 1})
    assert_error(reused, 409, "idempotency_key_reused")
    assert await job_count(session) == 3
    assert len(fake_replicate.created) == 3
    assert await balance(client, auth) == BONUS - 4 * PRICE


async def test_its_status_streams_until_done(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    accepted = await client.post(GENERATIONS, headers=auth, json={"prompt": "a cat"})
    response = await client.get(f"/api/v1/images/{accepted.json()['image_id']}/events", headers=auth)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block.strip()]
    last = json.loads(events[-1].split("data: ", 1)[1])
    assert (last["status"], last["kind"], last["prompt"]) == (
        JobStatus.completed.value,
        "generation",
        "a cat",
    )

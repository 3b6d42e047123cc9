"""Personal model trainings over HTTP against the fake Replicate: the start (zip of exactly the chosen
photos through the Files API, destination model created once, webhook URL), the end by signed webhook or
by polling, the credits held then captured or released exactly once, cancel and delete, validation,
plan quota, and other users' ids."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.models import CloneModel, ClonePhoto, CreditLedgerEntry, Upload, User
from app.services.clones import replicate_setup, training
from tests.conftest import make_settings
from tests.factories import bearer, make_clone_model, make_user
from tests.support.http import assert_error
from tests.support.images import photo_like
from tests.support.replicate import NOT_A_ZIP, OWNER, TRAINER_VERSION, FakeReplicateWithTrainings

MODELS = "/api/v1/models"
WEBHOOK = "/api/v1/webhooks/replicate"
BONUS = 10.0
COST = 3.0


@pytest.fixture
def settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake_replicate: FakeReplicateWithTrainings
) -> Settings:
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url="https://api.example.com",
        replicate_api_token=fake_replicate.api_token,
        replicate_webhook_secret=fake_replicate.webhook_secret,
        clone_replicate_owner=OWNER,
        clone_training_cost_credits=COST,
        clone_training_poll_after_seconds=0,
        clone_model_quotas={"free": 3, "pro": None},
    )


async def add_photos(client: httpx.AsyncClient, auth: dict[str, str], count: int = 5) -> list[str]:
    files = [("files", (f"p{i}.png", photo_like(40 + i, 40), "image/png")) for i in range(count)]
    response = await client.post("/api/v1/photos", headers=auth, files=files)
    assert response.status_code == 201, response.text
    return [item["id"] for item in response.json()["items"]]


async def train(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    photo_ids: list[str],
    trigger_word: str = "ZQXPRSN",
    **extra: Any,
) -> httpx.Response:
    body = {"name": "Me", "trigger_word": trigger_word, "photo_ids": photo_ids, **extra}
    return await client.post(MODELS, headers=auth, json=body)


async def started(
    client: httpx.AsyncClient, auth: dict[str, str], fake: FakeReplicateWithTrainings, count: int = 5
) -> tuple[dict[str, Any], str]:
    """A model whose training runs on the fake; (the 202 body, the training id)."""
    response = await train(client, auth, await add_photos(client, auth, count))
    assert response.status_code == 202, response.text
    (training_id,) = fake.trainings
    return response.json(), training_id


async def balance(client: httpx.AsyncClient, auth: dict[str, str]) -> float:
    return float((await client.get("/api/v1/users/credits", headers=auth)).json()["credits"])


async def model(client: httpx.AsyncClient, auth: dict[str, str], model_id: str) -> dict[str, Any]:
    response = await client.get(f"{MODELS}/{model_id}", headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def ledger_reasons(session: AsyncSession, model_id: str) -> list[str]:
    rows = await session.scalars(
        select(CreditLedgerEntry.reason)
        .where(CreditLedgerEntry.reference == f"clone_model:{model_id}")
        .order_by(CreditLedgerEntry.created_at)
    )
    return list(rows)


async def deliver(
    client: httpx.AsyncClient, fake: FakeReplicateWithTrainings, training_id: str, **kw: Any
) -> str:
    body, headers = fake.training_webhook(training_id, **kw)
    response = await client.post(WEBHOOK, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def test_a_training_starts_with_a_zip_of_exactly_the_chosen_photos(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    session: AsyncSession,
    container: Container,
    user: User,
) -> None:
    photo_ids = await add_photos(client, auth, 7)
    chosen = photo_ids[1:6]
    response = await train(client, auth, chosen, options={"steps": 800, "lora_rank": 32})
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["status"], body["trigger_word"], body["credits"]) == ("training", "ZQXPRSN", COST)
    assert sorted(body["photo_ids"]) == sorted(chosen)
    assert await balance(client, auth) == BONUS - COST  # held

    (training_id,) = fake_replicate.trainings
    sent = fake_replicate.training_requests[0]
    destination = f"{OWNER}/pixforge-clone-{user.id.hex}"
    assert sent["destination"] == destination
    assert sent["webhook"] == "https://api.example.com/api/v1/webhooks/replicate"
    assert sent["webhook_events_filter"] == ["start", "completed"]
    assert sent["input"] | {"input_images": None} == {
        "input_images": None,
        "trigger_word": "ZQXPRSN",
        "steps": 800,
        "lora_rank": 32,
    }
    assert sent["input"]["input_images"].startswith(f"{fake_replicate.base_url}/v1/files/")
    assert fake_replicate.trainings[training_id]["version"] == TRAINER_VERSION
    assert fake_replicate.destinations[destination]["visibility"] == "private"

    rows = await session.execute(
        select(ClonePhoto.id, Upload.storage_key)
        .join(Upload, Upload.id == ClonePhoto.upload_id)
        .where(ClonePhoto.id.in_([uuid.UUID(photo_id) for photo_id in chosen]))
    )
    expected = sorted([await container.storage.get(key) for _, key in rows.all()])
    archive = fake_replicate.zip_of(training_id)
    assert len(archive.namelist()) == 5
    assert sorted(archive.read(name) for name in archive.namelist()) == expected

    shown = await model(client, auth, body["id"])
    assert shown["logs_url"] == f"https://replicate.com/p/{training_id}"
    # A photo a running training uses cannot be deleted; one it does not use can.
    assert_error(await client.delete(f"/api/v1/photos/{chosen[0]}", headers=auth), 409, "photo_in_use")
    assert (await client.delete(f"/api/v1/photos/{photo_ids[0]}", headers=auth)).status_code == 204


async def test_success_by_webhook_captures_once_and_a_replay_changes_nothing(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    session: AsyncSession,
    container: Container,
) -> None:
    body, training_id = await started(client, auth, fake_replicate)
    # The `start` event: nothing ends.
    assert await deliver(client, fake_replicate, training_id) == "processed"
    assert (await model(client, auth, body["id"]))["status"] == "training"

    finished = fake_replicate.finish_training(training_id)
    assert await deliver(client, fake_replicate, training_id, msg_id="msg_done") == "processed"
    shown = await model(client, auth, body["id"])
    assert (shown["status"], shown["version"], shown["error"]) == (
        "ready",
        finished["output"]["version"],
        None,
    )
    assert shown["finished_at"] is not None
    assert await balance(client, auth) == BONUS - COST

    # The same delivery again (Replicate's retry), and the same end under a new id: no second effect.
    assert await deliver(client, fake_replicate, training_id, msg_id="msg_done") == "duplicate"
    assert await deliver(client, fake_replicate, training_id, msg_id="msg_other") == "processed"
    assert await training.poll(container) == 0
    assert await balance(client, auth) == BONUS - COST
    assert await ledger_reasons(session, body["id"]) == ["job_reserve", "job_capture"]
    # The trained version runs predictions on the fake.
    assert finished["output"]["version"].split(":")[1] in fake_replicate.versions


async def test_failure_releases_the_credits_and_keeps_the_providers_message(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    session: AsyncSession,
) -> None:
    fake_replicate.fail_next_training("CUDA out of memory while training")
    body, training_id = await started(client, auth, fake_replicate)
    fake_replicate.finish_training(training_id)
    assert await deliver(client, fake_replicate, training_id) == "processed"
    shown = await model(client, auth, body["id"])
    assert (shown["status"], shown["error"], shown["version"]) == (
        "failed",
        "CUDA out of memory while training",
        None,
    )
    assert await balance(client, auth) == BONUS
    assert await ledger_reasons(session, body["id"]) == ["job_reserve", "job_release"]
    # A failed model gives its quota slot back, and deleting it frees its trigger word.
    assert (await client.delete(f"{MODELS}/{body['id']}", headers=auth)).status_code == 204
    photos = (await client.get("/api/v1/photos", headers=auth)).json()["items"]
    retry = await train(client, auth, [photo["id"] for photo in photos])
    assert retry.status_code == 202, retry.text


async def test_a_lost_webhook_is_made_up_for_by_polling(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    container: Container,
    session: AsyncSession,
) -> None:
    body, _ = await started(client, auth, fake_replicate)
    assert await training.poll(container) == 0  # processing
    assert (await model(client, auth, body["id"]))["status"] == "training"
    assert await training.poll(container) == 1  # succeeded
    assert (await model(client, auth, body["id"]))["status"] == "ready"
    assert await training.poll(container) == 0
    assert await ledger_reasons(session, body["id"]) == ["job_reserve", "job_capture"]
    assert await balance(client, auth) == BONUS - COST


async def test_a_training_past_its_timeout_is_cancelled_and_released(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    container: Container,
) -> None:
    body, training_id = await started(client, auth, fake_replicate)
    container.settings.clone_training_timeout_seconds = 0.001
    assert await training.poll(container) == 1
    shown = await model(client, auth, body["id"])
    assert shown["status"] == "failed"
    assert "took longer" in shown["error"]
    assert fake_replicate.trainings[training_id]["status"] == "canceled"
    assert await balance(client, auth) == BONUS


async def test_deleting_a_running_training_cancels_it_and_releases_the_credits(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    session: AsyncSession,
) -> None:
    body, training_id = await started(client, auth, fake_replicate)
    assert (await client.delete(f"{MODELS}/{body['id']}", headers=auth)).status_code == 204
    assert fake_replicate.trainings[training_id]["status"] == "canceled"
    assert await balance(client, auth) == BONUS
    assert await ledger_reasons(session, body["id"]) == ["job_reserve", "job_release"]
    assert_error(await client.get(f"{MODELS}/{body['id']}", headers=auth), 404, "not_found")
    # Its photos are free again, and Replicate's late webhook finds nothing to change.
    assert await deliver(client, fake_replicate, training_id) == "processed"
    assert await balance(client, auth) == BONUS
    assert (await client.delete(f"/api/v1/photos/{body['photo_ids'][0]}", headers=auth)).status_code == 204


@pytest.mark.parametrize("replicate_answers", [True, False], ids=["cancelled", "replicate_down"])
async def test_erasing_the_account_cancels_its_running_training_and_releases_the_credits(
    replicate_answers: bool,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    session: AsyncSession,
) -> None:
    body, training_id = await started(client, auth, fake_replicate)
    if not replicate_answers:
        fake_replicate.fail_next(503)
    assert (await client.delete("/api/v1/users/me", headers=auth)).status_code == 204
    expected = "canceled" if replicate_answers else "starting"
    assert fake_replicate.trainings[training_id]["status"] == expected
    assert await ledger_reasons(session, body["id"]) == ["job_reserve", "job_release"]
    session.expunge_all()
    erased = await session.get(CloneModel, uuid.UUID(body["id"]))
    assert erased is not None
    assert erased.status == "canceled"
    # Replicate's late webhook (or the polling) changes nothing: released once.
    assert await deliver(client, fake_replicate, training_id) == "processed"
    assert await ledger_reasons(session, body["id"]) == ["job_reserve", "job_release"]


async def test_deleting_a_trained_model_deletes_its_version_but_it_still_counts(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicateWithTrainings
) -> None:
    body, training_id = await started(client, auth, fake_replicate)
    version = fake_replicate.finish_training(training_id)["output"]["version"]
    await deliver(client, fake_replicate, training_id)
    assert (await client.delete(f"{MODELS}/{body['id']}", headers=auth)).status_code == 204
    assert fake_replicate.deleted_versions == [version]
    assert (await client.get(MODELS, headers=auth)).json()["items"] == []
    assert_error(await client.get(f"{MODELS}/{body['id']}", headers=auth), 404, "not_found")
    quotas = (await client.get("/api/v1/users/me/quotas", headers=auth)).json()["quotas"]
    assert {quota["name"]: quota["used"] for quota in quotas}["models"] == 1
    assert await balance(client, auth) == BONUS - COST
    # Deleted models keep their trigger word.
    photos = (await client.get("/api/v1/photos", headers=auth)).json()["items"]
    again = await train(client, auth, [photo["id"] for photo in photos])
    assert_error(again, 409, "trigger_word_taken")


async def test_a_start_replicate_refuses_fails_the_model_and_releases(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicateWithTrainings
) -> None:
    photo_ids = await add_photos(client, auth)
    fake_replicate.fail_next(500)  # the Files API upload
    response = await train(client, auth, photo_ids)
    assert response.status_code == 202, response.text
    shown = await model(client, auth, response.json()["id"])
    assert shown["status"] == "failed"
    assert "could not be started" in shown["error"]
    assert fake_replicate.trainings == {}
    assert await balance(client, auth) == BONUS


async def test_the_destination_model_is_created_once(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicateWithTrainings
) -> None:
    photo_ids = await add_photos(client, auth, 10)
    assert (await train(client, auth, photo_ids[:5], "first")).status_code == 202
    assert (await train(client, auth, photo_ids[5:], "second")).status_code == 202
    assert len(fake_replicate.destinations) == 1
    creates = [r for r in fake_replicate.requests if r.method == "POST" and r.url.path == "/v1/models"]
    assert len(creates) == 1
    listed = (await client.get(MODELS, headers=auth, params={"limit": 1})).json()
    assert [item["trigger_word"] for item in listed["items"]] == ["second"]
    rest = (await client.get(MODELS, headers=auth, params={"cursor": listed["next_cursor"]})).json()
    assert ([item["trigger_word"] for item in rest["items"]], rest["next_cursor"]) == (["first"], None)


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"trigger_word": "a"}, 422, "validation_error"),
        ({"trigger_word": "two words"}, 422, "validation_error"),
        ({"trigger_word": "x" * 51}, 422, "validation_error"),
        ({"options": {"steps": 5000}}, 422, "too_many_steps"),
        ({"options": {"unknown": 1}}, 422, "validation_error"),
        ({"photos": 4}, 422, "not_enough_photos"),
        ({"photos": "duplicated"}, 422, "not_enough_photos"),
        ({"photos": "foreign"}, 404, "not_found"),
        ({"trigger_word": "zqxprsn"}, 409, "trigger_word_taken"),
    ],
)
async def test_refusals_change_nothing(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    user: User,
    change: dict[str, Any],
    status: int,
    error: str,
) -> None:
    photo_ids = await add_photos(client, auth, 5)
    await make_clone_model(session, user, [], trigger_word="ZQXPRSN", status="ready")
    change = dict(change)  # the parameter is shared by every database's run
    photos = change.pop("photos", None)
    if photos == 4:
        photo_ids = photo_ids[:4]
    elif photos == "duplicated":
        photo_ids = photo_ids[:4] + photo_ids[:1]
    elif photos == "foreign":
        other = await make_user(session, settings)
        photo_ids = photo_ids[:4] + (await add_photos(client, bearer(container, other), 1))
    body = {"name": "Me", "trigger_word": "Anna2", "photo_ids": photo_ids, **change}
    response = await client.post(MODELS, headers=auth, json=body)
    assert_error(response, status, error)
    assert len((await client.get(MODELS, headers=auth)).json()["items"]) == 1
    assert await balance(client, auth) == BONUS
    assert fake_replicate.requests == []


async def test_the_plan_quota_and_the_balance_are_enforced(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    session: AsyncSession,
    user: User,
) -> None:
    photo_ids = await add_photos(client, auth)
    for index in range(3):
        await make_clone_model(session, user, [], trigger_word=f"old{index}", status="ready")
    refused = assert_error(await train(client, auth, photo_ids), 403, "plan_required")
    assert refused["plans"] == ["pro"]
    user.plan = "pro"
    await session.commit()
    for trigger_word in ("first", "second", "third"):  # 10 credits: three trainings of 3
        assert (await train(client, auth, photo_ids, trigger_word)).status_code == 202
    assert_error(await train(client, auth, photo_ids, "fourth"), 402, "insufficient_credits")
    assert len(fake_replicate.trainings) == 3


async def test_another_users_model_is_not_found(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_replicate: FakeReplicateWithTrainings,
    session: AsyncSession,
    settings: Settings,
    container: Container,
) -> None:
    body, training_id = await started(client, auth, fake_replicate)
    other = bearer(container, await make_user(session, settings))
    assert_error(await client.get(f"{MODELS}/{body['id']}", headers=other), 404, "not_found")
    assert_error(await client.delete(f"{MODELS}/{body['id']}", headers=other), 404, "not_found")
    assert (await client.get(MODELS, headers=other)).json()["items"] == []
    assert fake_replicate.trainings[training_id]["status"] == "starting"


async def test_without_an_owner_setting_training_is_not_configured(
    client: httpx.AsyncClient, auth: dict[str, str], container: Container
) -> None:
    container.settings.clone_replicate_owner = ""
    photo_ids = await add_photos(client, auth)
    assert_error(await train(client, auth, photo_ids), 503, "provider_not_configured")


async def test_a_zip_the_trainer_cannot_read_fails_with_its_message(
    fake_replicate: FakeReplicateWithTrainings, container: Container
) -> None:
    """The fake's trainer refuses anything but a zip of ours, with the trainer's own words."""
    assert container.replicate is not None
    await replicate_setup.ensure_destination(container.replicate, container.settings, f"{OWNER}/probe")
    file = await container.replicate.upload_file(
        b"not a zip", filename="x.zip", content_type="application/zip"
    )
    started_training = await container.replicate.create_training(
        f"ostris/flux-dev-lora-trainer:{TRAINER_VERSION}",
        destination=f"{OWNER}/probe",
        input={"input_images": file.url, "trigger_word": "TOK"},
    )
    fake_replicate.finish_training(started_training.id)
    ended = await container.replicate.get_training(started_training.id)
    assert (ended.status, ended.error, ended.version) == ("failed", NOT_A_ZIP, None)

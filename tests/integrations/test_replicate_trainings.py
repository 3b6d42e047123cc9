"""ReplicateClient's files, models and trainings against the fake Replicate (providers.md §2b): the
multipart upload, model get/create (409 as a conflict), trainings create/get/cancel and version deletion."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from app.integrations.images.base import EngineError
from app.integrations.images.replicate import ReplicateClient
from tests.support.replicate import NO_DESTINATION, OWNER, TRAINER_VERSION, FakeReplicateWithTrainings

TOKEN = "r8_TestToken9f8e7d6c5b4a3928170"
TRAINER = f"ostris/flux-dev-lora-trainer:{TRAINER_VERSION}"
DESTINATION = f"{OWNER}/clone-1"


@pytest.fixture
def fake(outside_http: respx.MockRouter) -> FakeReplicateWithTrainings:
    return FakeReplicateWithTrainings(outside_http, api_token=TOKEN)


@pytest.fixture
async def replicate() -> AsyncIterator[ReplicateClient]:
    async with httpx.AsyncClient() as http:
        yield ReplicateClient(http, api_token=TOKEN, timeout_seconds=5.0)


async def test_upload_file_sends_multipart_and_returns_the_api_url(
    fake: FakeReplicateWithTrainings, replicate: ReplicateClient
) -> None:
    uploaded = await replicate.upload_file(
        b"PK\x05\x06" + bytes(18), filename="set.zip", content_type="application/zip", metadata={"k": "v"}
    )
    stored = fake.uploads[uploaded.id]
    assert (stored["name"], stored["content_type"], stored["size"], stored["metadata"]) == (
        "set.zip",
        "application/zip",
        22,
        {"k": "v"},
    )
    assert uploaded.url == f"https://api.replicate.com/v1/files/{uploaded.id}"
    assert fake.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_models_are_read_created_and_a_taken_name_is_a_conflict(
    fake: FakeReplicateWithTrainings, replicate: ReplicateClient
) -> None:
    assert await replicate.get_model(OWNER, "clone-1") is None
    created = await replicate.create_model(OWNER, "clone-1", visibility="private", hardware="gpu-t4")
    assert (created["owner"], created["name"], created["latest_version"]) == (OWNER, "clone-1", None)
    assert (await replicate.get_model(OWNER, "clone-1")) == created
    with pytest.raises(EngineError) as caught:
        await replicate.create_model(OWNER, "clone-1", visibility="private", hardware="gpu-t4")
    assert (caught.value.code, caught.value.retryable) == ("provider_conflict", False)
    with pytest.raises(EngineError) as caught:
        await replicate.create_model("someone-else", "x", visibility="private", hardware="gpu-t4")
    assert caught.value.code == "provider_auth_failed"


async def test_a_training_runs_to_a_version_that_can_be_deleted(
    fake: FakeReplicateWithTrainings, replicate: ReplicateClient
) -> None:
    await replicate.create_model(OWNER, "clone-1", visibility="private", hardware="gpu-t4")
    uploaded = await replicate.upload_file(_zip(), filename="set.zip", content_type="application/zip")
    started = await replicate.create_training(
        TRAINER,
        destination=DESTINATION,
        input={"input_images": uploaded.url, "trigger_word": "TOK"},
        webhook_url="https://api.example.com/api/v1/webhooks/replicate",
    )
    assert (started.status, started.version, started.logs_url) == (
        "starting",
        None,
        f"https://replicate.com/p/{started.id}",
    )
    assert fake.training_requests[0]["webhook_events_filter"] == ["start", "completed"]
    assert (await replicate.get_training(started.id)).status == "processing"
    done = await replicate.get_training(started.id)
    assert done.status == "succeeded"
    assert done.version is not None
    assert done.version.startswith(f"{DESTINATION}:")
    assert done.weights is not None
    # Cancelling an ended training answers it as it ended.
    assert (await replicate.cancel_training(started.id)).status == "succeeded"
    reference, _, version_id = done.version.partition(":")
    await replicate.delete_model_version(reference, version_id)
    assert fake.deleted_versions == [done.version]


async def test_a_missing_destination_and_a_cancel(
    fake: FakeReplicateWithTrainings, replicate: ReplicateClient
) -> None:
    with pytest.raises(EngineError) as caught:
        await replicate.create_training(TRAINER, destination=DESTINATION, input={"trigger_word": "TOK"})
    assert caught.value.code == "provider_not_found"
    assert NO_DESTINATION in str(caught.value)
    await replicate.create_model(OWNER, "clone-1", visibility="private", hardware="gpu-t4")
    started = await replicate.create_training(TRAINER, destination=DESTINATION, input={"trigger_word": "TOK"})
    assert (await replicate.cancel_training(started.id)).status == "canceled"
    assert (await replicate.get_training(started.id)).status == "canceled"


async def test_a_trainer_without_a_version_is_refused_before_any_request(
    fake: FakeReplicateWithTrainings, replicate: ReplicateClient
) -> None:
    with pytest.raises(ValueError, match="version"):
        await replicate.create_training("ostris/flux-dev-lora-trainer", destination=DESTINATION, input={})
    assert fake.requests == []


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "photo")
    return buffer.getvalue()

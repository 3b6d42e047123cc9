"""Input images reach Replicate without a public URL of ours: through its Files API, unless storage gives
a public https URL (issue 11, section 6)."""

from __future__ import annotations

import httpx
import pytest

from app.config import Settings
from app.services.engines.replicate_inputs import is_public_https
from tests.conftest import make_settings
from tests.support.images import photo_like
from tests.support.replicate import FakeReplicateWithTrainings


@pytest.fixture
def settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, fake_replicate: FakeReplicateWithTrainings
) -> Settings:
    # The default PUBLIC_BASE_URL (http://127.0.0.1:8000): nothing outside can fetch our signed URLs.
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        replicate_api_token=fake_replicate.api_token,
        replicate_poll_interval_seconds=0.01,
    )


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://bucket.s3.amazonaws.com/k.png?X-Amz-Signature=1", True),
        ("https://api.example.com/api/v1/files/k", True),
        ("http://api.example.com/api/v1/files/k", False),
        ("https://127.0.0.1:8000/api/v1/files/k", False),
        ("https://localhost/api/v1/files/k", False),
        ("https://10.0.0.7/k", False),
        ("https://minio/k", False),
        ("https://files.internal/k", False),
    ],
)
def test_which_storage_urls_replicate_can_fetch(url: str, public: bool) -> None:
    assert is_public_https(url) is public


async def test_a_hairstyle_upload_goes_through_the_files_api(
    client: httpx.AsyncClient, auth: dict[str, str], fake_replicate: FakeReplicateWithTrainings
) -> None:
    image = photo_like(96, 96)
    upload = await client.post(
        "/api/v1/uploads", headers=auth, files={"file": ("me.png", image, "image/png")}
    )
    style = (await client.get("/api/v1/styles")).json()[0]["id"]
    body = {"style_id": style, "upload_id": upload.json()["id"]}
    accepted = await client.post("/api/v1/image/generate", headers=auth, json=body)
    assert accepted.status_code == 202, accepted.text
    status = (await client.get(f"/api/v1/image/status/{accepted.json()['image_id']}", headers=auth)).json()
    assert status["status"] == "COMPLETED", status
    (sent,) = fake_replicate.created
    (url,) = sent["input"]["image_input"]
    assert url.startswith(f"{fake_replicate.base_url}/v1/files/")
    file_id = url.rsplit("/", 1)[1]
    assert fake_replicate.uploads[file_id]["content_type"] == "image/png"
    assert fake_replicate.upload_bytes[file_id][:8] == b"\x89PNG\r\n\x1a\n"

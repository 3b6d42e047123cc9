"""Uploads, background removal, vectorization, jobs and the gallery, through HTTP with the real local
engines and a fake ClipDrop."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import pytest
import respx
from PIL import Image
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database, EngineOptions, create_engine
from app.main import create_app
from app.models import (
    CreditAccount,
    CreditLedgerEntry,
    IdempotencyRecord,
    Job,
    JobKind,
    JobStatus,
    Upload,
    User,
)
from app.repositories.billing import idempotency_key_digest
from app.services import images as images_service
from app.services import job_submission
from app.services.idempotency import fingerprint_fields
from app.services.users import create_user
from app.tasks import recovery, runner
from tests.conftest import make_settings
from tests.fakes.clipdrop import FakeClipDrop
from tests.support.committed import cleanup as cleanup_committed
from tests.support.http import assert_error, sample
from tests.support.images import (
    corrupt_pixels_png,
    jpeg,
    logo_like,
    oversize,
    pdf_named_png,
    photo_like,
    png_bomb,
    truncated_png,
)

BONUS = 10.0
CUT_OUT = "/api/v1/images/remove-background"


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url="http://testserver",
        job_retry_base_seconds=0,
    )


async def balance(client: httpx.AsyncClient, auth: dict[str, str]) -> float:
    return float((await client.get("/api/v1/users/credits", headers=auth)).json()["credits"])


def files(
    data: bytes, name: str = "image.png", content_type: str = "image/png"
) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, data, content_type)}


async def pending_job(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, container: Container, user: User
) -> Job:
    """A submitted background-removal job (credits reserved) that no worker has run."""
    uploaded = (await client.post("/api/v1/uploads", headers=auth, files=files(logo_like(32)))).json()
    upload = await session.get_one(Upload, uuid.UUID(uploaded["id"]))
    return await job_submission.submit(session, container, user.id, JobKind.remove_background, upload, {})


class TestUploads:
    async def test_a_valid_image_is_stored_clean(
        self, client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
    ) -> None:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotated 90° clockwise: the stored image must come out upright
        exif[0x010F] = "SecretCam"
        source = Image.new("RGB", (40, 20), "red")
        buffer = io.BytesIO()
        source.save(buffer, "JPEG", exif=exif)
        response = await client.post("/api/v1/uploads", headers=auth, files=files(buffer.getvalue(), "x.png"))
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["content_type"], body["width"], body["height"]) == ("image/jpeg", 20, 40)
        stored = await client.get(urlsplit(body["url"]).path + "?" + urlsplit(body["url"]).query)
        assert stored.status_code == 200
        assert stored.headers["content-type"] == "image/jpeg"
        assert b"SecretCam" not in stored.content
        with Image.open(io.BytesIO(stored.content)) as image:
            assert image.size == (20, 40)
            assert not image.getexif()

    @pytest.mark.parametrize(
        ("data", "status", "error"),
        [
            pytest.param(pdf_named_png(), 415, "unsupported_image", id="pdf-named-png"),
            pytest.param(truncated_png(), 400, "corrupt_image", id="truncated-png"),
            pytest.param(corrupt_pixels_png(), 400, "corrupt_image", id="corrupt-pixel-data-png"),
            pytest.param(png_bomb(20000, 20000), 413, "image_too_large", id="20000x20000-bomb"),
            # Refused by the body limit while streaming, before the multipart parser holds it.
            pytest.param(oversize(11 * 1024 * 1024), 413, "payload_too_large", id="11-MB"),
            pytest.param(b"", 400, "empty_upload", id="empty"),
            pytest.param(b"GIF89a" + b"\x00" * 100, 415, "unsupported_image", id="gif-not-accepted"),
        ],
    )
    async def test_bad_uploads_are_refused_and_nothing_is_stored(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        settings: Settings,
        data: bytes,
        status: int,
        error: str,
    ) -> None:
        for endpoint in ("/api/v1/uploads", "/api/v1/images/remove-background"):
            response = await client.post(endpoint, headers=auth, files=files(data, "photo.png"))
            assert_error(response, status, error)
        assert await session.scalar(select(func.count()).select_from(Upload)) == 0
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
        assert await balance(client, auth) == BONUS  # nothing reserved
        storage_dir = settings.storage_dir
        assert not storage_dir.exists() or not any(path.is_file() for path in storage_dir.rglob("*"))

    async def test_a_signed_url_expires_and_cannot_be_forged(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        body = (await client.post("/api/v1/uploads", headers=auth, files=files(logo_like(64)))).json()
        url = urlsplit(body["url"])
        assert (await client.get(f"{url.path}?{url.query}")).status_code == 200
        forged = url.query.replace("signature=", "signature=0")
        assert_error(await client.get(f"{url.path}?{forged}"), 404, "not_found")
        expired = "expires=1&" + url.query.split("&", 1)[1]
        assert_error(await client.get(f"{url.path}?{expired}"), 404, "not_found")
        other_key = url.path.replace(".png", ".jpg")
        assert_error(await client.get(f"{other_key}?{url.query}"), 404, "not_found")


class TestLocalBackgroundRemoval:
    async def test_sync_returns_a_real_matte_and_charges_one_credit(
        self, client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
    ) -> None:
        response = await client.post(
            "/api/v1/images/remove-background", headers=auth, files=files(photo_like(320, 240))
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["content_type"] == "image/png"
        assert body["credits"] == BONUS - 1
        with Image.open(io.BytesIO(base64.b64decode(body["image_base64"]))) as image:
            assert image.mode == "RGBA"
            assert image.size == (320, 240)
            alpha = image.getchannel("A")
            histogram = alpha.histogram()
            assert sum(histogram[250:]) > 0.05 * 320 * 240  # opaque subject
            assert sum(histogram[:6]) > 0.05 * 320 * 240  # transparent background
        job = await session.scalar(select(Job).where(Job.id == uuid.UUID(body["image_id"])))
        assert job is not None
        assert (job.status, job.provider, job.attempts) == (JobStatus.completed.value, "local", 1)
        reasons = list(
            await session.scalars(select(CreditLedgerEntry.reason).order_by(CreditLedgerEntry.created_at))
        )
        assert reasons == ["signup_bonus", "job_reserve", "job_capture"]

    async def test_by_upload_id_and_async_with_polling(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        uploaded = (await client.post("/api/v1/uploads", headers=auth, files=files(jpeg(200, 150)))).json()
        response = await client.post(
            "/api/v1/images/remove-background?async=true", headers=auth, data={"upload_id": uploaded["id"]}
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        # The ASGI transport runs the background task before returning: it is done by now.
        status = (await client.get(f"/api/v1/image/status/{accepted['image_id']}", headers=auth)).json()
        assert status["status"] == "COMPLETED"
        assert status["outputs"][0]["content_type"] == "image/png"
        assert status["time_taken"] is not None
        assert await balance(client, auth) == BONUS - 1

    async def test_insufficient_credits_is_402_and_nothing_is_created(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        user: User,
        settings: Settings,
    ) -> None:
        # The account as ten cut-outs would leave it (each one is a real inference: too slow to repeat).
        await session.execute(update(CreditAccount).where(CreditAccount.user_id == user.id).values(balance=0))
        before = await session.scalar(select(func.count()).select_from(Job))
        uploads_before = await session.scalar(select(func.count()).select_from(Upload))
        files_before = sorted(settings.storage_dir.rglob("*.*"))
        response = await client.post(
            "/api/v1/images/remove-background", headers=auth, files=files(logo_like(32))
        )
        body = assert_error(response, 402, "insufficient_credits")
        assert (body["required"], body["available"]) == (1.0, 0.0)
        assert await session.scalar(select(func.count()).select_from(Job)) == before
        assert await session.scalar(select(func.count()).select_from(Upload)) == uploads_before
        assert sorted(settings.storage_dir.rglob("*.*")) == files_before  # the inline file is not kept

    async def test_someone_elses_upload_is_404(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        settings: Settings,
        container: Container,
    ) -> None:
        uploaded = (await client.post("/api/v1/uploads", headers=auth, files=files(logo_like(32)))).json()
        other = await create_user(session, settings, email="other@example.com", email_verified_at=utcnow())
        other_auth = {"Authorization": f"Bearer {container.tokens.issue(other.id, 'access')[0]}"}
        response = await client.post(
            "/api/v1/images/remove-background", headers=other_auth, data={"upload_id": uploaded["id"]}
        )
        assert_error(response, 404, "not_found")


class TestClipDrop:
    @pytest.fixture
    def clipdrop(self, outside_http: respx.MockRouter) -> FakeClipDrop:
        return FakeClipDrop(outside_http)

    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path_factory: pytest.TempPathFactory, clipdrop: FakeClipDrop
    ) -> Settings:
        return make_settings(
            database_url=database_url,
            data_dir=tmp_path_factory.mktemp("data"),
            clipdrop_api_key=clipdrop.api_key,
            job_retry_base_seconds=0,
            job_max_attempts=2,
        )

    async def test_clipdrop_is_used_when_its_key_is_set(
        self, client: httpx.AsyncClient, auth: dict[str, str], clipdrop: FakeClipDrop, session: AsyncSession
    ) -> None:
        response = await client.post(
            "/api/v1/images/remove-background", headers=auth, files=files(photo_like(64, 64))
        )
        assert response.status_code == 200, response.text
        assert len(clipdrop.uploads) == 1
        job = await session.scalar(select(Job))
        assert job is not None
        assert job.provider == "clipdrop"

    @pytest.mark.parametrize(
        ("failures", "status", "reason"),
        [
            pytest.param([(429,), (429,)], 503, "provider_rate_limited", id="429-twice"),
            pytest.param([(500,), (500,)], 503, "provider_error", id="500-twice"),
            pytest.param([(402,)], 502, "provider_out_of_credits", id="402"),
            pytest.param([(403,)], 502, "provider_auth_failed", id="403"),
            pytest.param([(400,)], 422, "invalid_image", id="400"),
            pytest.param(["html", "html"], 503, "provider_error", id="malformed-200"),
            pytest.param(["timeout", "timeout"], 503, "provider_timeout", id="timeout"),
        ],
    )
    async def test_provider_failures_fail_cleanly_and_give_the_credits_back(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        clipdrop: FakeClipDrop,
        session: AsyncSession,
        failures: list[object],
        status: int,
        reason: str,
    ) -> None:
        for failure in failures:
            if failure == "html":
                clipdrop.answer_html_next()
            elif failure == "timeout":
                clipdrop.time_out_next()
            else:
                assert isinstance(failure, tuple)
                clipdrop.fail_next(failure[0])
        response = await client.post(
            "/api/v1/images/remove-background", headers=auth, files=files(logo_like(48))
        )
        body = assert_error(response, status, "job_failed")
        assert body["reason"] == reason
        assert body["credits_charged"] == 0
        assert "clipdrop-test-key" not in response.text
        job = await session.scalar(select(Job))
        assert job is not None
        assert (job.status, job.error_code) == (JobStatus.failed.value, reason)
        assert job.attempts == len(failures)
        assert await balance(client, auth) == BONUS
        reasons = list(
            await session.scalars(select(CreditLedgerEntry.reason).order_by(CreditLedgerEntry.created_at))
        )
        assert reasons == ["signup_bonus", "job_reserve", "job_release"]

    async def test_a_transient_failure_is_retried_and_succeeds(
        self, client: httpx.AsyncClient, auth: dict[str, str], clipdrop: FakeClipDrop, session: AsyncSession
    ) -> None:
        clipdrop.fail_next(503)
        response = await client.post(
            "/api/v1/images/remove-background", headers=auth, files=files(logo_like(48))
        )
        assert response.status_code == 200, response.text
        job = await session.scalar(select(Job))
        assert job is not None
        assert job.attempts == 2
        assert await balance(client, auth) == BONUS - 1


class TestVectorize:
    @pytest.mark.parametrize(("mode", "cost"), [("preview", 0.2), ("full", 1.0)])
    async def test_svg_with_paths_at_its_price(
        self, client: httpx.AsyncClient, auth: dict[str, str], mode: str, cost: float
    ) -> None:
        response = await client.post(
            "/api/v1/images/vectorize", headers=auth, files=files(logo_like(128)), data={"mode": mode}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        svg = ET.fromstring(body["svg"])
        assert svg.tag.endswith("svg")
        assert any(element.tag.endswith("path") for element in svg.iter())
        assert body["credits"] == pytest.approx(BONUS - cost)
        url = urlsplit(body["url"])
        stored = await client.get(f"{url.path}?{url.query}")
        assert stored.headers["content-type"] == "image/svg+xml"
        assert "default-src 'none'" in stored.headers["content-security-policy"]

    async def test_a_trace_over_its_time_limit_fails_uncharged(
        self, client: httpx.AsyncClient, auth: dict[str, str], container: Container
    ) -> None:
        container.vectorizer.timeout_seconds = 0.3
        response = await client.post(
            "/api/v1/images/vectorize",
            headers=auth,
            files=files(photo_like(1024, 1024)),
            data={"mode": "full"},
        )
        body = assert_error(response, 422, "job_failed")
        assert body["reason"] == "image_too_complex"
        assert "preview mode" in body["detail"]
        assert await balance(client, auth) == BONUS
        await client.post(
            "/api/v1/images/vectorize", headers=auth, files=files(logo_like(32)), data={"mode": "preview"}
        )
        metrics = (await client.get("/metrics")).text
        outcomes = {"kind": "vectorize", "provider": "local"}
        failed = {**outcomes, "status": "FAILED", "error_code": "image_too_complex"}
        assert sample(metrics, "pixforge_jobs_finished_total", **failed) == 1
        completed = {**outcomes, "status": "COMPLETED", "error_code": ""}
        assert sample(metrics, "pixforge_jobs_finished_total", **completed) == 1
        assert sample(metrics, "pixforge_job_duration_seconds_count", **outcomes) == 1

    async def test_json_body_with_an_upload_and_options(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        uploaded = (
            await client.post("/api/v1/uploads", headers=auth, files=files(photo_like(256, 192)))
        ).json()
        response = await client.post(
            "/api/v1/images/vectorize",
            headers=auth,
            json={"upload_id": uploaded["id"], "mode": "full", "options": {"colormode": "binary"}},
        )
        assert response.status_code == 200, response.text

    async def test_webp_is_refused_for_vectorizing(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        from tests.support.images import webp

        response = await client.post(
            "/api/v1/images/vectorize", headers=auth, files=files(webp(64, 64), "a.webp")
        )
        assert_error(response, 415, "unsupported_image")
        assert await balance(client, auth) == BONUS

    @pytest.mark.parametrize(
        "body", [{"mode": "huge"}, {"options": {"color_precision": 99}}, {"upload_id": "nope"}]
    )
    async def test_invalid_fields_are_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, object]
    ) -> None:
        response = await client.post(
            "/api/v1/images/vectorize", headers=auth, json={"upload_id": str(uuid.uuid4()), **body}
        )
        assert_error(response, 422, "validation_error")


class TestGallery:
    @pytest.fixture
    async def three_jobs(self, client: httpx.AsyncClient, auth: dict[str, str]) -> AsyncIterator[list[str]]:
        ids = []
        for _ in range(3):
            response = await client.post(
                "/api/v1/images/vectorize", headers=auth, files=files(logo_like(32)), data={"mode": "preview"}
            )
            ids.append(response.json()["image_id"])
        return ids

    async def test_pages_filters_edits_and_deletes(
        self, client: httpx.AsyncClient, auth: dict[str, str], three_jobs: list[str], settings: Settings
    ) -> None:
        first = (await client.get("/api/v1/images?limit=2", headers=auth)).json()
        second = (
            await client.get(f"/api/v1/images?limit=2&cursor={first['next_cursor']}", headers=auth)
        ).json()
        assert [item["id"] for item in first["items"] + second["items"]] == list(reversed(three_jobs))
        assert second["next_cursor"] is None
        patched = await client.patch(
            f"/api/v1/images/{three_jobs[0]}",
            headers=auth,
            json={"is_favourite": True, "description": "logo"},
        )
        assert patched.json()["is_favourite"] is True
        favourites = (await client.get("/api/v1/images?favourite=true", headers=auth)).json()["items"]
        assert [item["id"] for item in favourites] == [three_jobs[0]]
        assert (await client.get("/api/v1/images?kind=remove_background", headers=auth)).json()["items"] == []
        output_files = list(settings.storage_dir.rglob("*.svg"))
        assert len(output_files) == 3
        assert (await client.delete(f"/api/v1/images/{three_jobs[0]}", headers=auth)).status_code == 204
        assert_error(await client.get(f"/api/v1/images/{three_jobs[0]}", headers=auth), 404, "not_found")
        assert len(list(settings.storage_dir.rglob("*.svg"))) == 2

    async def test_another_user_sees_none_of_it(
        self,
        client: httpx.AsyncClient,
        three_jobs: list[str],
        session: AsyncSession,
        settings: Settings,
        container: Container,
    ) -> None:
        other = await create_user(session, settings, email="nosy@example.com", email_verified_at=utcnow())
        nosy = {"Authorization": f"Bearer {container.tokens.issue(other.id, 'access')[0]}"}
        assert (await client.get("/api/v1/images", headers=nosy)).json()["items"] == []
        for job_id in three_jobs:
            assert_error(await client.get(f"/api/v1/images/{job_id}", headers=nosy), 404, "not_found")
            assert_error(
                await client.patch(f"/api/v1/images/{job_id}", headers=nosy, json={"is_favourite": True}),
                404,
                "not_found",
            )
            assert_error(await client.delete(f"/api/v1/images/{job_id}", headers=nosy), 404, "not_found")

    async def test_bad_gallery_queries(self, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
        assert_error(await client.get("/api/v1/images?cursor=garbage!", headers=auth), 400, "invalid_cursor")
        assert_error(await client.get("/api/v1/images?status=DONE", headers=auth), 422, "validation_error")
        assert_error(await client.get("/api/v1/images/not-a-uuid", headers=auth), 422, "validation_error")


class TestGalleryUploads:
    """Images uploaded on their own are gallery items (kind `upload`); those sent inline with a job are
    that job's input only."""

    async def test_direct_uploads_and_jobs_in_one_newest_first_list(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        order = []
        for step in range(4):
            if step % 2 == 0:
                response = await client.post("/api/v1/uploads", headers=auth, files=files(logo_like(32)))
                order.append(("upload", response.json()["id"]))
            else:
                response = await client.post(
                    "/api/v1/images/vectorize",
                    headers=auth,
                    files=files(logo_like(32)),
                    data={"mode": "preview"},
                )
                order.append(("vectorize", response.json()["image_id"]))
        seen = []
        cursor = ""
        while True:
            page = (await client.get(f"/api/v1/images?limit=3{cursor}", headers=auth)).json()
            seen += [(item["kind"], item["id"]) for item in page["items"]]
            if page["next_cursor"] is None:
                break
            cursor = f"&cursor={page['next_cursor']}"
        assert seen == list(reversed(order))  # the vectorize jobs' inline uploads are not listed

        uploads = (await client.get("/api/v1/images?kind=upload", headers=auth)).json()["items"]
        assert [item["id"] for item in uploads] == [order[2][1], order[0][1]]
        item = uploads[0]
        assert (item["status"], item["credits"], item["width"], item["height"]) == ("COMPLETED", 0, 32, 32)
        assert item["outputs"][0]["content_type"] == "image/png"
        assert (await client.get(item["outputs"][0]["url"])).content.startswith(b"\x89PNG")
        failed = (await client.get("/api/v1/images?status=FAILED", headers=auth)).json()["items"]
        assert failed == []
        jobs_only = (await client.get("/api/v1/images?kind=vectorize", headers=auth)).json()["items"]
        assert {item["kind"] for item in jobs_only} == {"vectorize"}

    async def test_an_upload_is_favourited_read_and_deleted_like_a_job(
        self, client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
    ) -> None:
        upload_id = (await client.post("/api/v1/uploads", headers=auth, files=files(logo_like(32)))).json()[
            "id"
        ]
        patched = await client.patch(
            f"/api/v1/images/{upload_id}", headers=auth, json={"is_favourite": True, "description": "me"}
        )
        assert (patched.status_code, patched.json()["description"]) == (200, "me")
        favourites = (await client.get("/api/v1/images?favourite=true", headers=auth)).json()["items"]
        assert [item["id"] for item in favourites] == [upload_id]
        assert (await client.get(f"/api/v1/images/{upload_id}", headers=auth)).json()["kind"] == "upload"
        assert len(list(settings.storage_dir.rglob("uploads/*.png"))) == 1
        assert (await client.delete(f"/api/v1/images/{upload_id}", headers=auth)).status_code == 204
        assert_error(await client.get(f"/api/v1/images/{upload_id}", headers=auth), 404, "not_found")
        assert list(settings.storage_dir.rglob("uploads/*.png")) == []

    async def test_deleting_an_upload_keeps_the_finished_jobs_made_from_it(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        upload_id = (await client.post("/api/v1/uploads", headers=auth, files=files(logo_like(32)))).json()[
            "id"
        ]
        job_id = (
            await client.post(
                "/api/v1/images/vectorize", headers=auth, json={"upload_id": upload_id, "mode": "preview"}
            )
        ).json()["image_id"]
        assert (await client.delete(f"/api/v1/images/{upload_id}", headers=auth)).status_code == 204
        job = (await client.get(f"/api/v1/images/{job_id}", headers=auth)).json()
        assert (job["status"], job["input_url"]) == ("COMPLETED", None)
        assert (await client.get(job["outputs"][0]["url"])).status_code == 200

    async def test_an_upload_a_job_still_runs_on_is_not_deleted(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        container: Container,
        user: User,
    ) -> None:
        job = await pending_job(client, auth, session, container, user)
        assert job.input_upload_id is not None
        response = await client.delete(f"/api/v1/images/{job.input_upload_id}", headers=auth)
        assert_error(response, 409, "conflict")
        assert await session.get(Upload, job.input_upload_id) is not None
        # Nor by the retention sweep, however old: the job would lose its input mid-run.
        await session.execute(update(Upload).values(created_at=utcnow() - timedelta(days=30)))
        container.settings = container.settings.model_copy(update={"retention_hours_uploads": 24})
        assert (await images_service.sweep_expired(container)).get("uploads") == 0
        assert await session.get(Upload, job.input_upload_id) is not None

    async def test_someone_elses_upload_is_not_found(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        settings: Settings,
        container: Container,
    ) -> None:
        upload_id = (await client.post("/api/v1/uploads", headers=auth, files=files(logo_like(32)))).json()[
            "id"
        ]
        other = await create_user(session, settings, email="peeker@example.com", email_verified_at=utcnow())
        nosy = {"Authorization": f"Bearer {container.tokens.issue(other.id, 'access')[0]}"}
        assert (await client.get("/api/v1/images", headers=nosy)).json()["items"] == []
        for method, body in (("GET", None), ("PATCH", {"is_favourite": True}), ("DELETE", None)):
            response = await client.request(method, f"/api/v1/images/{upload_id}", headers=nosy, json=body)
            assert_error(response, 404, "not_found")
        assert (await client.get(f"/api/v1/images/{upload_id}", headers=auth)).json()["is_favourite"] is False

    async def test_an_inline_upload_is_not_an_item_of_its_own(
        self, client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
    ) -> None:
        response = await client.post(
            "/api/v1/images/vectorize", headers=auth, files=files(logo_like(32)), data={"mode": "preview"}
        )
        job = await session.get_one(Job, uuid.UUID(response.json()["image_id"]))
        assert job.input_upload_id is not None
        assert_error(
            await client.get(f"/api/v1/images/{job.input_upload_id}", headers=auth), 404, "not_found"
        )


class TestIdempotentRetries:
    """Idempotency-Key on the endpoints that spend credits: a retry (a mobile client that timed out) gets
    the first answer, rebuilt from the job it made, and is never charged twice."""

    CUT_OUT = "/api/v1/images/remove-background"

    async def job_count(self, session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)

    async def test_a_retried_cut_out_is_answered_from_the_first_job_and_charged_once(
        self, client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
    ) -> None:
        headers = {**auth, "Idempotency-Key": "cut-1"}
        source = photo_like(64, 64)
        first = await client.post(self.CUT_OUT, headers=headers, files=files(source))
        # httpx picks a new multipart boundary per request: the bytes differ, the request does not.
        second = await client.post(self.CUT_OUT, headers=headers, files=files(source, name="again.png"))
        assert (first.status_code, second.status_code) == (200, 200), second.text
        assert second.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert second.json() == first.json()
        assert await balance(client, auth) == BONUS - 1
        assert await self.job_count(session) == 1

    async def test_the_same_key_for_another_image_is_refused(
        self, client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
    ) -> None:
        headers = {**auth, "Idempotency-Key": "cut-2"}
        await client.post(self.CUT_OUT, headers=headers, files=files(photo_like(64, 64)))
        other = await client.post(self.CUT_OUT, headers=headers, files=files(logo_like(64)))
        assert_error(other, 409, "idempotency_key_reused")
        assert await self.job_count(session) == 1
        assert await balance(client, auth) == BONUS - 1

    async def test_a_request_refused_before_its_job_frees_its_key(
        self, client: httpx.AsyncClient, auth: dict[str, str], container: Container
    ) -> None:
        headers = {**auth, "Idempotency-Key": "cut-3"}
        source = photo_like(64, 64)
        priced = container.settings
        container.settings = priced.model_copy(update={"remove_background_cost_credits": Decimal(11)})
        assert_error(
            await client.post(self.CUT_OUT, headers=headers, files=files(source)), 402, "insufficient_credits"
        )
        container.settings = priced  # as if the user had bought credits meanwhile
        retried = await client.post(self.CUT_OUT, headers=headers, files=files(source))
        assert retried.status_code == 200, retried.text
        assert "idempotent-replayed" not in retried.headers
        assert await balance(client, auth) == BONUS - 1

    async def test_a_failed_job_is_answered_again_and_not_run_again(
        self, client: httpx.AsyncClient, auth: dict[str, str], container: Container, session: AsyncSession
    ) -> None:
        container.vectorizer.timeout_seconds = 0.3
        headers = {**auth, "Idempotency-Key": "vec-1"}
        answers = [
            await client.post(
                "/api/v1/images/vectorize",
                headers=headers,
                files=files(photo_like(1024, 1024)),
                data={"mode": "full"},
            )
            for _ in range(2)
        ]
        bodies = [assert_error(answer, 422, "job_failed") for answer in answers]
        assert bodies[0]["job_id"] == bodies[1]["job_id"]
        assert await self.job_count(session) == 1
        assert await balance(client, auth) == BONUS

    async def test_a_retry_while_the_first_job_runs_is_told_to_wait(
        self, client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
    ) -> None:
        headers = {**auth, "Idempotency-Key": "vec-2"}
        request = {"files": files(logo_like(32)), "data": {"mode": "preview"}}
        first = await client.post("/api/v1/images/vectorize", headers=headers, **request)
        job_id = uuid.UUID(first.json()["image_id"])
        # Put both back to where they were while the first request was still running.
        await session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.processing.value))
        await session.execute(update(IdempotencyRecord).values(status_code=None))
        waiting = await client.post("/api/v1/images/vectorize", headers=headers, **request)
        assert_error(waiting, 409, "job_running")
        assert waiting.headers["retry-after"] == "5"
        await session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.completed.value))
        done = await client.post("/api/v1/images/vectorize", headers=headers, **request)
        assert (done.status_code, done.json()["svg"]) == (200, first.json()["svg"])
        assert await self.job_count(session) == 1

    async def test_a_claim_whose_request_died_before_its_job_is_taken_over(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        user: User,
        settings: Settings,
    ) -> None:
        source = photo_like(64, 64)
        fields = {"file": source, "upload_id": None, "async": False}
        for key, age in (("fresh", 0), ("dead", settings.job_lease_seconds + 1)):
            session.add(
                IdempotencyRecord(
                    user_id=user.id,
                    key=idempotency_key_digest(key),
                    request_fingerprint=fingerprint_fields("POST", self.CUT_OUT, fields),
                    created_at=utcnow() - timedelta(seconds=age),
                    expires_at=utcnow() + timedelta(hours=1),
                )
            )
        await session.flush()
        in_flight = await client.post(
            self.CUT_OUT, headers={**auth, "Idempotency-Key": "fresh"}, files=files(source)
        )
        assert_error(in_flight, 409, "request_in_progress")
        taken_over = await client.post(
            self.CUT_OUT, headers={**auth, "Idempotency-Key": "dead"}, files=files(source)
        )
        assert taken_over.status_code == 200, taken_over.text
        assert await balance(client, auth) == BONUS - 1

    async def test_an_async_cut_out_replays_its_202(
        self, client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession
    ) -> None:
        headers = {**auth, "Idempotency-Key": "async-1"}
        source = photo_like(64, 64)
        answers = [
            await client.post(f"{self.CUT_OUT}?async=true", headers=headers, files=files(source))
            for _ in range(2)
        ]
        assert [answer.status_code for answer in answers] == [202, 202]
        assert answers[1].json() == answers[0].json()
        assert answers[1].headers["idempotent-replayed"] == "true"
        assert await self.job_count(session) == 1


class TestRecoveryAndRetention:
    async def test_a_job_interrupted_by_a_crash_is_recovered(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        container: Container,
        user: User,
    ) -> None:
        # Submitted and claimed, then the process died: PROCESSING with a lease in the past.
        job = await pending_job(client, auth, session, container, user)
        job.status = JobStatus.processing.value
        job.attempts = 1
        job.lease_until = utcnow() - timedelta(seconds=1)
        await session.flush()
        rerun = await recovery.recover(container)
        assert rerun == [job.id]
        await runner.run(container, job.id)
        session.expunge_all()
        recovered = await session.get_one(Job, job.id)
        assert (recovered.status, recovered.attempts) == (JobStatus.completed.value, 2)
        assert await balance(client, auth) == BONUS - 1

    async def test_a_job_out_of_attempts_is_failed_and_refunded(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        container: Container,
        user: User,
    ) -> None:
        job = await pending_job(client, auth, session, container, user)
        job.status = JobStatus.processing.value
        job.attempts = container.settings.job_max_attempts
        job.lease_until = utcnow() - timedelta(seconds=1)
        await session.flush()
        assert await recovery.recover(container) == []
        session.expunge_all()
        failed = await session.get_one(Job, job.id)
        assert (failed.status, failed.error_code) == (JobStatus.failed.value, "abandoned")
        assert await balance(client, auth) == BONUS

    async def test_retention_deletes_old_images_and_nothing_younger(
        self, client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, container: Container
    ) -> None:
        for _ in range(2):
            await client.post(
                "/api/v1/images/vectorize", headers=auth, files=files(logo_like(32)), data={"mode": "preview"}
            )
        old, young = list(await session.scalars(select(Job).order_by(Job.created_at)))
        await session.execute(
            update(Job).where(Job.id == old.id).values(created_at=utcnow() - timedelta(hours=25))
        )
        container.settings = container.settings.model_copy(update={"retention_hours_vectorize": 24})
        removed = await images_service.sweep_expired(container)
        assert removed == {"vectorize": 1}
        session.expunge_all()
        assert [job.id for job in await session.scalars(select(Job))] == [young.id]
        assert not (container.settings.storage_dir / old.outputs[0]["key"]).exists()
        assert (container.settings.storage_dir / young.outputs[0]["key"]).exists()


class TestReviewedEdges:
    async def test_an_unfinished_job_cannot_be_deleted(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        container: Container,
        user: User,
    ) -> None:
        job = await pending_job(client, auth, session, container, user)
        assert_error(await client.delete(f"/api/v1/images/{job.id}", headers=auth), 409, "conflict")
        assert await balance(client, auth) == BONUS - 1  # still held, not lost

    async def test_a_job_whose_input_vanished_fails_and_releases_the_credits(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        container: Container,
        user: User,
    ) -> None:
        job = await pending_job(client, auth, session, container, user)
        assert job.input_key is not None
        (container.settings.storage_dir / job.input_key).unlink()
        await runner.run(container, job.id)
        status = (await client.get(f"/api/v1/images/{job.id}", headers=auth)).json()
        assert (status["status"], status["error_code"], status["attempts"]) == ("FAILED", "input_missing", 1)
        assert await balance(client, auth) == BONUS

    async def test_an_unreadable_input_is_retried_as_a_storage_outage(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        container: Container,
        user: User,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from app.integrations.storage import StorageError

        job = await pending_job(client, auth, session, container, user)

        async def broken_get(key: str) -> bytes:
            raise StorageError("connection reset")

        monkeypatch.setattr(container.storage, "get", broken_get)
        await runner.run(container, job.id)
        status = (await client.get(f"/api/v1/images/{job.id}", headers=auth)).json()
        assert (status["status"], status["error_code"]) == ("FAILED", "storage_unavailable")
        assert status["attempts"] == container.settings.job_max_attempts
        assert await balance(client, auth) == BONUS

    async def test_a_storage_failure_fails_the_job_and_releases_the_credits(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        container: Container,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from app.integrations.storage import StorageError

        uploaded = (await client.post("/api/v1/uploads", headers=auth, files=files(logo_like(32)))).json()

        async def broken_put(key: str, data: bytes, content_type: str) -> None:
            raise StorageError("disk full")

        monkeypatch.setattr(container.storage, "put", broken_put)
        response = await client.post(
            "/api/v1/images/remove-background", headers=auth, data={"upload_id": uploaded["id"]}
        )
        body = assert_error(response, 503, "job_failed")
        assert body["reason"] == "storage_unavailable"
        assert await balance(client, auth) == BONUS

    @pytest.mark.parametrize(
        ("path", "form"),
        [
            pytest.param("/api/v1/uploads", {}, id="upload"),
            pytest.param("/api/v1/images/remove-background", {}, id="cut-out"),
            pytest.param("/api/v1/images/remove-background?async=true", {}, id="async-cut-out"),
            pytest.param("/api/v1/images/vectorize", {"mode": "preview"}, id="vectorize"),
        ],
    )
    async def test_an_image_that_cannot_be_stored_is_a_503_that_keeps_nothing(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        container: Container,
        monkeypatch: pytest.MonkeyPatch,
        path: str,
        form: dict[str, str],
    ) -> None:
        from app.integrations.storage import StorageError

        async def broken_put(key: str, data: bytes, content_type: str) -> None:
            raise StorageError("disk full")

        monkeypatch.setattr(container.storage, "put", broken_put)
        response = await client.post(path, headers=auth, files=files(logo_like(32)), data=form)
        assert_error(response, 503, "storage_unavailable")
        assert response.headers["retry-after"]
        assert await balance(client, auth) == BONUS
        assert await session.scalar(select(func.count()).select_from(Upload)) == 0
        assert await session.scalar(select(func.count()).select_from(Job)) == 0

    @pytest.mark.parametrize(
        "cursor",
        [
            pytest.param(
                base64.urlsafe_b64encode(
                    json.dumps(["0001-01-01T00:00:00+01:00", str(uuid.uuid4())]).encode()
                ).decode(),
                id="before-year-1",
            ),
            pytest.param(
                base64.urlsafe_b64encode(
                    json.dumps(["9999-12-31T23:59:59-01:00", str(uuid.uuid4())]).encode()
                ).decode(),
                id="after-year-9999",
            ),
        ],
    )
    async def test_extreme_cursors_are_400(
        self, client: httpx.AsyncClient, auth: dict[str, str], cursor: str
    ) -> None:
        for path in ("/api/v1/images", "/api/v1/credits/transactions"):
            assert_error(
                await client.get(path, headers=auth, params={"cursor": cursor}), 400, "invalid_cursor"
            )

    async def test_null_favourite_is_422(self, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
        done = await client.post(
            "/api/v1/images/vectorize", headers=auth, files=files(logo_like(32)), data={"mode": "preview"}
        )
        image_id = done.json()["image_id"]
        response = await client.patch(f"/api/v1/images/{image_id}", headers=auth, json={"is_favourite": None})
        assert_error(response, 422, "validation_error")

    async def test_deeply_nested_options_are_a_client_error(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post(
            "/api/v1/images/vectorize",
            headers=auth,
            files=files(logo_like(32)),
            data={"options": "[" * 100_000},
        )
        assert response.status_code in (400, 422), response.text
        assert await balance(client, auth) == BONUS


def test_clipdrop_inputs_are_fitted_to_its_pixel_limit() -> None:
    from app.integrations.images.base import fit_pixels

    big = photo_like(600, 400)
    fitted = fit_pixels(big, 60_000)
    with Image.open(io.BytesIO(fitted)) as image:
        assert image.width * image.height <= 60_000
        assert abs(image.width / image.height - 1.5) < 0.02
    assert fit_pixels(big, 600 * 400) is big


@pytest.mark.postgres_only
async def test_waiting_clients_hold_no_connection_the_jobs_need(
    database_url: str, settings: Settings, engine: AsyncEngine
) -> None:
    """With a pool of one connection, cut-outs requested together all complete: a waiting request gives
    its connection back before its job runs in units of work of its own (it used to hold two)."""
    database = Database(
        create_engine(database_url, EngineOptions(pool_size=1, max_overflow=0, pool_timeout_seconds=20))
    )
    container = Container.build(settings, database)
    async with database.session_scope() as session:
        owner = await create_user(
            session, settings, email=f"pool-{uuid.uuid4().hex[:8]}@example.com", email_verified_at=utcnow()
        )
    try:
        headers = {"Authorization": f"Bearer {container.tokens.issue(owner.id, 'access')[0]}"}
        transport = httpx.ASGITransport(app=create_app(settings, database, container))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/images/remove-background", headers=headers, files=files(logo_like(48))
                    )
                    for _ in range(3)
                )
            )
            assert [answer.status_code for answer in answers] == [200] * 3, [a.text for a in answers]
            assert await balance(client, headers) == BONUS - 3
    finally:
        await container.aclose()
        await database.dispose()
        await cleanup_committed(engine, [owner.id], [])


class TestUsage:
    async def test_each_job_leaves_one_usage_record_charged_only_on_success(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        session: AsyncSession,
        container: Container,
        user: User,
    ) -> None:
        cut_out = await client.post(CUT_OUT, headers=auth, files=files(photo_like(48, 48)))
        assert cut_out.status_code == 200, cut_out.text
        preview = await client.post(
            "/api/v1/images/vectorize", headers=auth, data={"mode": "preview"}, files=files(logo_like(64))
        )
        assert preview.status_code == 200, preview.text
        lost = await pending_job(client, auth, session, container, user)
        assert lost.input_key is not None
        (container.settings.storage_dir / lost.input_key).unlink()
        await runner.run(container, lost.id)

        summary = (await client.get("/api/v1/users/me/usage", headers=auth)).json()

        totals = {t["action"]: (t["count"], t["failed"], t["credits"]) for t in summary["totals"]}
        assert totals == {"remove_background": (1, 1, 1.0), "vectorize_preview": (1, 0, 0.2)}
        assert summary["credits"] == 1.2
        assert await balance(client, auth) == BONUS - 1.2

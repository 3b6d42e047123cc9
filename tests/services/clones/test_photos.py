"""Photo sets over HTTP: several images per request validated like POST /uploads (all or nothing), count
and size limits, cursor listing, deletion (refused while a training uses the photo), owner only."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.models import ClonePhoto, Upload, User
from tests.conftest import make_settings
from tests.factories import bearer, make_clone_model, make_user
from tests.support.http import assert_error
from tests.support.images import jpeg, logo_like, photo_like, truncated_png

PHOTOS = "/api/v1/photos"
PER_REQUEST = 3
PER_USER = 4
MAX_BYTES = 60_000


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        clone_photos_max_per_request=PER_REQUEST,
        clone_photos_max_per_user=PER_USER,
        clone_photo_max_bytes=MAX_BYTES,
    )


def images(*blobs: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"p{index}.png", blob, "image/png")) for index, blob in enumerate(blobs)]


async def add(client: httpx.AsyncClient, auth: dict[str, str], *blobs: bytes) -> list[str]:
    response = await client.post(PHOTOS, headers=auth, files=images(*blobs))
    assert response.status_code == 201, response.text
    return [item["id"] for item in response.json()["items"]]


async def stored_files(settings: Settings) -> int:
    root = settings.storage_dir
    return sum(1 for path in root.rglob("*") if path.is_file()) if root.exists() else 0


async def test_several_photos_are_stored_clean_and_listed_but_not_in_the_gallery(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.post(PHOTOS, headers=auth, files=images(logo_like(32), jpeg(40, 30)))
    assert response.status_code == 201, response.text
    items = response.json()["items"]
    assert [(item["content_type"], item["width"], item["height"]) for item in items] == [
        ("image/png", 32, 32),
        ("image/jpeg", 40, 30),
    ]
    fetched = await client.get(urlsplit(items[1]["url"]).path + "?" + urlsplit(items[1]["url"]).query)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/jpeg"

    listed = (await client.get(PHOTOS, headers=auth)).json()
    assert {item["id"] for item in listed["items"]} == {item["id"] for item in items}
    assert listed["next_cursor"] is None
    gallery = (await client.get("/api/v1/images", headers=auth)).json()
    assert gallery["items"] == []


async def test_one_bad_image_refuses_the_whole_request_and_keeps_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, settings: Settings
) -> None:
    response = await client.post(PHOTOS, headers=auth, files=images(logo_like(32), truncated_png()))
    assert_error(response, 400, "corrupt_image")
    assert await session.scalar(select(func.count()).select_from(ClonePhoto)) == 0
    assert await session.scalar(select(func.count()).select_from(Upload)) == 0
    assert await stored_files(settings) == 0


@pytest.mark.parametrize(
    ("blobs", "status", "error"),
    [
        pytest.param([b"not an image"], 415, "unsupported_image", id="not-an-image"),
        pytest.param([b""], 400, "empty_upload", id="empty"),
        pytest.param([photo_like(400, 300)], 413, "image_too_large", id="over-the-photo-size-limit"),
        pytest.param([logo_like(16)] * (PER_REQUEST + 1), 413, "too_many_photos", id="too-many-at-once"),
    ],
)
async def test_invalid_requests_are_refused(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    blobs: list[bytes],
    status: int,
    error: str,
) -> None:
    assert len(photo_like(400, 300)) > MAX_BYTES  # the size case really is over the limit
    assert_error(await client.post(PHOTOS, headers=auth, files=images(*blobs)), status, error)
    assert await session.scalar(select(func.count()).select_from(ClonePhoto)) == 0


async def test_no_file_is_a_validation_error_and_anonymous_is_refused(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    assert (await client.post(PHOTOS, headers=auth, data={"x": "1"})).status_code == 422
    assert_error(await client.post(PHOTOS, files=images(logo_like(16))), 401, "unauthenticated")
    assert_error(await client.get(PHOTOS), 401, "unauthenticated")


async def test_a_set_holds_at_most_the_configured_number_of_photos(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    await add(client, auth, logo_like(16), logo_like(17), logo_like(18))
    response = await client.post(PHOTOS, headers=auth, files=images(logo_like(19), logo_like(20)))
    assert_error(response, 409, "photo_set_full")
    await add(client, auth, logo_like(21))
    listed = (await client.get(PHOTOS, headers=auth)).json()["items"]
    assert len(listed) == PER_USER


async def test_the_list_pages_by_cursor_newest_first(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    first = await add(client, auth, logo_like(16))
    rest = await add(client, auth, logo_like(17), logo_like(18))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get(PHOTOS, headers=auth, params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(first + rest)
    assert seen[-1] == first[0]  # the oldest comes last
    assert_error(await client.get(PHOTOS, headers=auth, params={"cursor": "!!"}), 400, "invalid_cursor")


async def test_a_photo_is_deleted_with_its_file_unless_a_training_uses_it(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    user: User,
    settings: Settings,
) -> None:
    in_training, trained, free = await add(client, auth, logo_like(16), logo_like(17), logo_like(18))
    await make_clone_model(session, user, [uuid.UUID(in_training)])
    await make_clone_model(session, user, [uuid.UUID(trained)], status="ready")

    assert_error(await client.delete(f"{PHOTOS}/{in_training}", headers=auth), 409, "photo_in_use")
    for photo_id in (trained, free):
        assert (await client.delete(f"{PHOTOS}/{photo_id}", headers=auth)).status_code == 204
        assert_error(await client.delete(f"{PHOTOS}/{photo_id}", headers=auth), 404, "not_found")
    listed = (await client.get(PHOTOS, headers=auth)).json()["items"]
    assert [item["id"] for item in listed] == [in_training]
    assert await stored_files(settings) == 1


async def test_another_users_photo_is_not_found(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    container: Container,
) -> None:
    (photo_id,) = await add(client, auth, logo_like(16))
    stranger = bearer(container, await make_user(session, settings))
    assert_error(await client.delete(f"{PHOTOS}/{photo_id}", headers=stranger), 404, "not_found")
    assert (await client.get(PHOTOS, headers=stranger)).json()["items"] == []
    assert_error(await client.delete(f"{PHOTOS}/{uuid.uuid4()}", headers=auth), 404, "not_found")
    assert len((await client.get(PHOTOS, headers=auth)).json()["items"]) == 1


async def test_erasing_the_account_erases_its_photos(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, settings: Settings
) -> None:
    await add(client, auth, logo_like(16), logo_like(17))
    assert (await client.delete("/api/v1/users/me", headers=auth)).status_code == 204
    assert await session.scalar(select(func.count()).select_from(ClonePhoto)) == 0
    assert await stored_files(settings) == 0

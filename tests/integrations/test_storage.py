"""Object storage: S3Storage against moto's S3 server over real HTTP (presigned URLs checked for expiry
and signature as S3 does, see tests/fakes/s3.py), LocalStorage on a temp dir with its HMAC-signed URLs,
and those URLs served through the app's /api/v1/files route."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.config import Settings
from app.container import Container
from app.integrations.storage import (
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    StorageError,
    check_key,
    s3_client,
)
from tests.conftest import make_settings
from tests.fakes.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, PresignedS3Server

# Nothing here depends on the database: one run, on SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

BUCKET = "pixforge-test"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

INVALID_KEYS = [
    pytest.param("../x", id="parent"),
    pytest.param("a/../../x", id="inner-parent"),
    pytest.param("/abs", id="absolute"),
    pytest.param("a//b", id="double-slash"),
    pytest.param("", id="empty"),
    pytest.param("a" * 600, id="600-chars"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a b", id="space"),
    pytest.param("é.png", id="non-ascii"),
    pytest.param("users/x.png\n", id="trailing-newline"),
]


def unique_key(suffix: str = ".png") -> str:
    return f"users/{uuid.uuid4()}/{uuid.uuid4()}{suffix}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- S3Storage against moto over HTTP ------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server() -> Iterator[PresignedS3Server]:
    server = PresignedS3Server()
    server.start()
    try:
        boto3_client(server.endpoint_url).create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.reset()
        server.stop()


def boto3_client(endpoint_url: str) -> Any:
    """The test's own client, to look behind S3Storage's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def s3_admin(s3_server: PresignedS3Server) -> Any:
    return boto3_client(s3_server.endpoint_url)


def make_s3(endpoint_url: str, bucket: str = BUCKET) -> S3Storage:
    client = s3_client(
        endpoint_url=endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    return S3Storage(bucket=bucket, client=client)


@pytest.fixture
def s3(s3_server: PresignedS3Server) -> S3Storage:
    return make_s3(s3_server.endpoint_url)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


async def test_s3_put_get_round_trip_keeps_the_content_type(s3: S3Storage, s3_admin: Any) -> None:
    key = unique_key()
    await s3.put(key, PNG, "image/png")

    assert await s3.get(key) == PNG
    head = s3_admin.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == len(PNG)


async def test_s3_put_overwrites(s3: S3Storage, s3_admin: Any) -> None:
    key = unique_key(".svg")
    await s3.put(key, b"old", "image/png")
    await s3.put(key, b"<svg/>", "image/svg+xml")

    assert await s3.get(key) == b"<svg/>"
    assert s3_admin.head_object(Bucket=BUCKET, Key=key)["ContentType"] == "image/svg+xml"


async def test_s3_keys_are_stored_exactly_as_given(s3: S3Storage, s3_admin: Any) -> None:
    prefix = f"users/{uuid.uuid4()}/"
    keys = {f"{prefix}uploads/a.png", f"{prefix}outputs/b-1_c.webp"}
    for key in keys:
        await s3.put(key, b"x", "image/png")

    listed = s3_admin.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    assert {item["Key"] for item in listed["Contents"]} == keys


async def test_s3_delete_then_get_is_object_not_found(s3: S3Storage) -> None:
    key = unique_key()
    await s3.put(key, PNG, "image/png")
    await s3.delete(key)

    with pytest.raises(ObjectNotFound):
        await s3.get(key)
    await s3.delete(key)  # deleting what is gone is fine, as on S3


async def test_s3_get_of_a_missing_key_is_object_not_found(s3: S3Storage) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        await s3.get(unique_key())
    assert isinstance(caught.value.__cause__, ClientError)


async def test_s3_missing_bucket_is_a_storage_error_not_object_not_found(
    s3_server: PresignedS3Server,
) -> None:
    storage = make_s3(s3_server.endpoint_url, bucket="no-such-bucket")
    with pytest.raises(StorageError) as caught:
        await storage.get(unique_key())
    assert not isinstance(caught.value, ObjectNotFound)
    assert "NoSuchBucket" in str(caught.value)


async def test_s3_presigned_get_downloads_the_object(s3: S3Storage, http: httpx.AsyncClient) -> None:
    key = unique_key()
    await s3.put(key, PNG, "image/png")

    url = await s3.url(key, expires_in=60, download_name="sneaker.png")
    parts = urlsplit(url)
    assert unquote(parts.path) == f"/{BUCKET}/{key}"
    assert parse_qs(parts.query)["X-Amz-Expires"] == ["60"]

    response = await http.get(url)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'inline; filename="sneaker.png"'


async def test_s3_presigned_get_is_refused_when_tampered_or_unsigned(
    s3: S3Storage, http: httpx.AsyncClient
) -> None:
    key = unique_key()
    other = unique_key()
    await s3.put(key, PNG, "image/png")
    await s3.put(other, b"other", "image/png")
    url = await s3.url(key, expires_in=60)

    assert (await http.get(url.replace(key, other))).status_code == 403
    assert (await http.get(url.split("?", 1)[0])).status_code == 403


async def test_s3_presigned_get_expires(s3: S3Storage, http: httpx.AsyncClient) -> None:
    key = unique_key()
    await s3.put(key, PNG, "image/png")
    # X-Amz-Date has whole seconds: a 1 s URL may already be stale when first used, so the control that
    # the server honours an unexpired URL after the wait is a 5 s one signed at the same moment.
    short = await s3.url(key, expires_in=1)
    control = await s3.url(key, expires_in=5)

    await asyncio.sleep(2.1)
    response = await http.get(short)
    assert response.status_code == 403
    assert "<Code>AccessDenied</Code>" in response.text
    assert "Request has expired" in response.text
    assert (await http.get(control)).status_code == 200


async def test_s3_presigned_put_accepts_an_upload_of_its_content_type(
    s3: S3Storage, s3_admin: Any, http: httpx.AsyncClient
) -> None:
    key = unique_key(".webp")
    url = await s3.presigned_put(key, "image/webp", expires_in=60)

    response = await http.put(url, content=b"RIFF....WEBP", headers={"Content-Type": "image/webp"})
    assert response.status_code == 200, response.text
    assert await s3.get(key) == b"RIFF....WEBP"
    assert s3_admin.head_object(Bucket=BUCKET, Key=key)["ContentType"] == "image/webp"


async def test_s3_presigned_put_is_bound_to_its_content_type(s3: S3Storage, http: httpx.AsyncClient) -> None:
    key = unique_key(".png")
    url = await s3.presigned_put(key, "image/png", expires_in=60)

    response = await http.put(url, content=b"<svg/>", headers={"Content-Type": "image/svg+xml"})
    assert response.status_code == 403
    with pytest.raises(ObjectNotFound):
        await s3.get(key)


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_s3_invalid_keys_are_refused_before_any_request(s3: S3Storage, key: str) -> None:
    sent: list[str] = []
    s3._client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.url))

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: s3.put(key, b"x", "image/png"),
        lambda: s3.get(key),
        lambda: s3.delete(key),
        lambda: s3.url(key, 60),
        lambda: s3.presigned_put(key, "image/png", 60),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="invalid storage key"):
            await call()
    assert sent == []


async def test_s3_unreachable_endpoint_is_a_storage_error_within_bounded_time() -> None:
    # S3Storage has no timeout/retry knob (connect 5 s, read 30 s, 3 attempts are hard-coded): a refused
    # connection is the only unreachable case that stays quick.
    storage = make_s3(f"http://127.0.0.1:{closed_port()}")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: storage.put(unique_key(), b"x", "image/png"),
        lambda: storage.get(unique_key()),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StorageError, match="S3 unreachable") as caught:
            await call()
        assert time.monotonic() - started < 15
        assert not isinstance(caught.value, ObjectNotFound)
        assert isinstance(caught.value.__cause__, BotoCoreError)


class _TruncatingHandler(BaseHTTPRequestHandler):
    """Answers every GET with a 200 that promises 1000 bytes and hangs up after 10."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "1000")
        self.send_header("Last-Modified", formatdate(usegmt=True))
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def truncating_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TruncatingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_s3_body_cut_short_is_a_storage_error(truncating_endpoint: str) -> None:
    storage = make_s3(truncating_endpoint)
    with pytest.raises(StorageError):
        await storage.get(unique_key())


# --- LocalStorage --------------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(
        tmp_path / "storage", public_base_url="https://api.example.com/", signing_key=b"k" * 32
    )


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def parse_signed(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path.startswith("/api/v1/files/")
    return unquote(parts.path.removeprefix("/api/v1/files/")), int(query["expires"][0]), query["signature"][0]


async def test_local_round_trip(local: LocalStorage) -> None:
    key = unique_key()
    await local.put(key, PNG, "image/png")

    assert await local.get(key) == PNG
    assert (local.root / key).read_bytes() == PNG
    await local.put(key, b"second", "image/png")
    assert await local.get(key) == b"second"


async def test_local_write_leaves_no_temp_files(local: LocalStorage) -> None:
    keys = {unique_key(), "a.png", "users/x/y.svg"}
    for key in keys:
        await local.put(key, PNG, "image/png")
        await local.put(key, b"again", "image/png")

    assert files_under(local.root) == keys


async def test_local_write_is_a_rename_of_a_complete_file_in_the_same_directory(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "users/u/a.png"
    await local.put(key, b"old", "image/png")
    seen: list[tuple[Path, bytes, bytes]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((Path(src), Path(src).read_bytes(), Path(dst).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    await local.put(key, PNG, "image/png")
    monkeypatch.undo()

    [(source, staged, current)] = seen
    assert source.parent == local.root / "users/u"  # same filesystem, so the rename is atomic
    assert staged == PNG  # the whole object is written before it becomes visible
    assert current == b"old"  # readers see the old object until the rename
    assert await local.get(key) == PNG


async def test_local_failed_write_leaves_no_temp_file(local: LocalStorage) -> None:
    await local.put("a/b.png", PNG, "image/png")
    with pytest.raises((OSError, StorageError)):
        await local.put("a", PNG, "image/png")  # "a" is a directory: the rename fails

    assert files_under(local.root) == {"a/b.png"}


@pytest.mark.parametrize("key", ["users", "users/u/a.png/b.png"])
async def test_local_get_of_a_non_object_is_object_not_found(local: LocalStorage, key: str) -> None:
    await local.put("users/u/a.png", PNG, "image/png")
    with pytest.raises(ObjectNotFound):
        await local.get(key)


async def test_local_get_of_a_missing_key_is_object_not_found(local: LocalStorage) -> None:
    with pytest.raises(ObjectNotFound):
        await local.get(unique_key())


async def test_local_delete(local: LocalStorage) -> None:
    key = unique_key()
    await local.put(key, PNG, "image/png")
    await local.delete(key)

    with pytest.raises(ObjectNotFound):
        await local.get(key)
    await local.delete(key)  # already gone: fine
    await local.delete(unique_key())  # never there, parent missing too: fine


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_local_invalid_keys_are_refused(local: LocalStorage, key: str) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: local.put(key, b"x", "image/png"),
        lambda: local.get(key),
        lambda: local.delete(key),
        lambda: local.url(key, 60),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="invalid storage key"):
            await call()
    assert not (local.root.parent / "x").exists()


async def test_local_key_through_a_symlink_out_of_the_root_is_refused(
    local: LocalStorage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    local.root.mkdir(parents=True)
    (local.root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(StorageError, match="escapes"):
        await local.put("link/x.png", b"x", "image/png")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("key", ["users/u/a.png", "a", "A-1_b.c/d.e.svg", "a" * 512])
def test_check_key_accepts_our_keys(key: str) -> None:
    assert check_key(key) == key


async def test_local_signed_url_verifies(local: LocalStorage) -> None:
    key = "users/u/a-1_b.png"
    before = int(time.time())
    url = await local.url(key, expires_in=300)

    assert url.startswith("https://api.example.com/api/v1/files/users/u/a-1_b.png?")
    parsed_key, expires, signature = parse_signed(url)
    assert parsed_key == key
    assert before + 300 <= expires <= int(time.time()) + 300
    assert local.verify(key, expires, signature)


async def test_local_signed_url_refuses_tampering_other_keys_and_expiry(local: LocalStorage) -> None:
    key = "users/u/a.png"
    _, expires, signature = parse_signed(await local.url(key, expires_in=300))
    tampered = signature[:-1] + ("0" if signature[-1] != "0" else "1")

    assert not local.verify(key, expires, tampered)
    assert not local.verify(key, expires, "")
    assert not local.verify("users/u/b.png", expires, signature)
    assert not local.verify(key, expires + 1, signature)  # extending the expiry breaks the signature
    past = int(time.time()) - 1
    assert not local.verify(key, past, local.signature(key, past))  # properly signed, but expired
    other = LocalStorage(local.root, public_base_url="https://api.example.com", signing_key=b"o" * 32)
    assert not other.verify(key, expires, signature)


async def test_local_verify_of_a_non_ascii_signature_is_false(local: LocalStorage) -> None:
    _, expires, signature = parse_signed(await local.url("users/u/a.png", expires_in=300))
    assert not local.verify("users/u/a.png", expires, "é" + signature[1:])


# --- Through the app -----------------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url=database_url, data_dir=tmp_path, public_base_url="http://testserver")


@pytest.mark.parametrize(
    ("suffix", "content_type"),
    [
        (".png", "image/png"),
        (".webp", "image/webp"),
        (".svg", "image/svg+xml"),
        (".bin", "application/octet-stream"),
    ],
)
async def test_app_serves_a_signed_local_url(
    client: httpx.AsyncClient, container: Container, settings: Settings, suffix: str, content_type: str
) -> None:
    assert isinstance(container.storage, LocalStorage)
    key = unique_key(suffix)
    await container.storage.put(key, PNG, content_type)
    assert (settings.storage_dir / key).is_file()

    url = await container.storage.url(key, expires_in=60)
    assert url.startswith("http://testserver/api/v1/files/")
    response = await client.get(url)

    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"].split(";")[0] == content_type
    assert response.headers["content-disposition"] == "inline"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]  # an SVG runs no script


async def test_app_refuses_forged_and_stale_urls(client: httpx.AsyncClient, container: Container) -> None:
    storage = container.storage
    assert isinstance(storage, LocalStorage)
    key, other = unique_key(), unique_key()
    await storage.put(key, PNG, "image/png")
    await storage.put(other, b"other", "image/png")
    url = await storage.url(key, expires_in=60)
    _, expires, signature = parse_signed(url)
    past = int(time.time()) - 1
    missing = unique_key()

    forged = [
        url.replace(signature, signature[::-1]),
        url.replace(key, other),
        url.replace(f"expires={expires}", f"expires={expires + 3600}"),
        f"/api/v1/files/{key}?expires={past}&signature={storage.signature(key, past)}",
        f"/api/v1/files/{missing}?expires={expires}&signature={storage.signature(missing, expires)}",
        f"/api/v1/files/..%2F..%2Fetc%2Fpasswd?expires={expires}&signature={signature}",
    ]
    for forgery in forged:
        response = await client.get(forgery)
        assert response.status_code == 404, forgery
        assert PNG not in response.content
    assert (await client.get(url)).status_code == 200


async def test_app_non_ascii_signature_is_404(client: httpx.AsyncClient, container: Container) -> None:
    storage = container.storage
    assert isinstance(storage, LocalStorage)
    key = unique_key()
    await storage.put(key, PNG, "image/png")
    _, expires, _ = parse_signed(await storage.url(key, expires_in=60))

    response = await client.get(f"/api/v1/files/{key}", params={"expires": expires, "signature": "é"})
    assert response.status_code == 404

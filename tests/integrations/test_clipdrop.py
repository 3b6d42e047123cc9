"""ClipDropRemover against FakeClipDrop (providers.md §1): the request it sends, the PNG it returns, and
how every failure maps onto an EngineError."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx
from PIL import Image

from app.integrations.images.base import BackgroundRemover, EngineError, retry_after_seconds
from app.integrations.images.clipdrop import ClipDropRemover
from app.logging import configure_logging
from tests.conftest import make_settings
from tests.fakes.clipdrop import FakeClipDrop, jpeg, png, webp

API_KEY = "clipdrop-test-key-5f4e3d2c1b0a"


@pytest.fixture
def fake(outside_http: respx.MockRouter) -> FakeClipDrop:
    return FakeClipDrop(outside_http, api_key=API_KEY)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def remover(http: httpx.AsyncClient) -> ClipDropRemover:
    return ClipDropRemover(http, api_key=API_KEY, timeout_seconds=5.0)


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


async def refused(remover: ClipDropRemover, image: bytes | None = None) -> EngineError:
    with pytest.raises(EngineError) as caught:
        await remover.remove_background(png() if image is None else image)
    assert API_KEY not in str(caught.value)
    return caught.value


# -- success --


async def test_returns_a_png_with_an_alpha_matte_at_the_input_size(
    fake: FakeClipDrop, remover: ClipDropRemover
) -> None:
    result = await remover.remove_background(png(80, 60))

    assert result.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(result)) as image:
        assert image.size == (80, 60)
        assert image.mode == "RGBA"
        assert image.getpixel((0, 0)) == (200, 30, 30, 0)  # background cleared
        assert image.getpixel((40, 30)) == (200, 30, 30, 255)  # subject kept
    assert fake.credits == 99


async def test_sends_the_key_and_the_image_as_multipart_image_file(
    fake: FakeClipDrop, remover: ClipDropRemover
) -> None:
    image = png()
    await remover.remove_background(image)

    [request] = fake.requests
    assert request.method == "POST"
    assert str(request.url) == "https://clipdrop-api.co/remove-background/v1"
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["accept"] == "image/png"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert fake.uploads == [(image, "image.png", "image/png")]


@pytest.mark.parametrize(
    ("image", "filename", "content_type"),
    [(jpeg(), "image.jpg", "image/jpeg"), (webp(), "image.webp", "image/webp")],
    ids=["jpeg", "webp"],
)
async def test_names_the_upload_after_its_real_format(
    fake: FakeClipDrop, remover: ClipDropRemover, image: bytes, filename: str, content_type: str
) -> None:
    result = await remover.remove_background(image)

    assert result.startswith(b"\x89PNG")
    assert fake.uploads == [(image, filename, content_type)]


async def test_the_base_url_is_configurable(outside_http: respx.MockRouter, http: httpx.AsyncClient) -> None:
    fake = FakeClipDrop(outside_http, api_key=API_KEY, base_url="http://clipdrop.internal:8080/")
    remover = ClipDropRemover(http, api_key=API_KEY, base_url="http://clipdrop.internal:8080/")

    await remover.remove_background(png())

    assert str(fake.requests[0].url) == "http://clipdrop.internal:8080/remove-background/v1"


def test_is_a_background_remover_named_clipdrop(http: httpx.AsyncClient) -> None:
    remover: BackgroundRemover = ClipDropRemover(http, api_key=API_KEY)
    assert remover.name == "clipdrop"
    assert API_KEY not in repr(remover)


def test_an_empty_key_is_refused_at_construction(http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="API key"):
        ClipDropRemover(http, api_key="  ")


@pytest.mark.usefixtures("restore_root_logging")
async def test_logs_the_credits_left_but_never_the_key(
    fake: FakeClipDrop, remover: ClipDropRemover, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(make_settings(log_format="json"))
    fake.credits = 43

    await remover.remove_background(png())
    fake.fail_next(403, f"Invalid api key {API_KEY}")
    await refused(remover)

    captured = capsys.readouterr()
    output = captured.out + captured.err
    lines = [json.loads(line) for line in captured.err.strip().splitlines()]
    ours = [line for line in lines if line.get("logger") == "app.integrations.clipdrop"]
    [success] = [line for line in ours if line["event"] == "clipdrop.background_removed"]
    assert success["remaining_credits"] == 42
    assert success["credits_consumed"] == 1
    assert success["level"] == "info"
    [failure] = [line for line in ours if line["event"] == "clipdrop.failed"]
    assert failure["code"] == "provider_auth_failed"
    assert failure["status_code"] == 403
    assert API_KEY not in output


# -- refused before any request --


@pytest.mark.parametrize(
    "image",
    [b"", b"GIF89a" + b"\x00" * 20, b"<svg xmlns='http://www.w3.org/2000/svg'/>"],
    ids=["empty", "gif", "svg"],
)
async def test_a_file_that_is_not_png_jpeg_or_webp_is_refused_locally(
    fake: FakeClipDrop, remover: ClipDropRemover, image: bytes
) -> None:
    error = await refused(remover, image)

    assert (error.code, error.retryable) == ("invalid_image", False)
    assert fake.requests == []


async def test_a_file_over_30_mb_is_refused_locally(fake: FakeClipDrop, remover: ClipDropRemover) -> None:
    error = await refused(remover, png() + b"\x00" * (30 * 1024 * 1024))

    assert (error.code, error.retryable) == ("invalid_image", False)
    assert fake.requests == []


# -- status codes --


async def test_400_is_an_invalid_image(fake: FakeClipDrop, remover: ClipDropRemover) -> None:
    # 6000 x 5000 = 30 megapixels, over ClipDrop's 25: the fake refuses it like the real API.
    error = await refused(remover, png(6000, 5000))

    assert (error.code, error.retryable) == ("invalid_image", False)
    assert "resolution is too big" in str(error)
    assert fake.credits == 100


async def test_a_wrong_key_403_is_an_auth_failure_without_echoing_the_key(
    outside_http: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    FakeClipDrop(outside_http, api_key="the-right-key")
    remover = ClipDropRemover(http, api_key=API_KEY)

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_auth_failed", False)
    assert "403" in str(error)
    assert "CLIPDROP_API_KEY" in str(error)


async def test_a_provider_message_echoing_the_key_is_scrubbed(
    fake: FakeClipDrop, remover: ClipDropRemover
) -> None:
    fake.fail_next(403, f"API key {API_KEY} is revoked")

    error = await refused(remover)

    assert str(error).endswith("API key [redacted] is revoked")


async def test_402_means_the_account_is_out_of_credits(fake: FakeClipDrop, remover: ClipDropRemover) -> None:
    fake.credits = 0

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_out_of_credits", False)
    assert "no credits left" in str(error)


async def test_429_is_a_retryable_rate_limit(fake: FakeClipDrop, remover: ClipDropRemover) -> None:
    fake.fail_next(429)

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_rate_limited", True)
    assert "retry after" not in str(error)


async def test_429_mentions_retry_after_when_given(fake: FakeClipDrop, remover: ClipDropRemover) -> None:
    fake.fail_next(429, headers={"retry-after": "12"})

    error = await refused(remover)

    assert "retry after 12 s" in str(error)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_a_retryable_provider_error(
    fake: FakeClipDrop, remover: ClipDropRemover, status: int
) -> None:
    fake.fail_next(status)

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_error", True)
    assert f"({status})" in str(error)


async def test_406_is_our_bug_and_not_retried(fake: FakeClipDrop, remover: ClipDropRemover) -> None:
    fake.fail_next(406)

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_error", False)


# -- malformed answers --


async def test_a_200_html_page_is_a_retryable_provider_error(
    fake: FakeClipDrop, remover: ClipDropRemover
) -> None:
    fake.answer_html_next()

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_error", True)
    assert "text/html" in str(error)


async def test_a_200_labelled_png_that_is_not_one_is_a_provider_error(
    outside_http: respx.MockRouter, remover: ClipDropRemover
) -> None:
    outside_http.post("https://clipdrop-api.co/remove-background/v1").respond(
        200, content=b"not really a png", headers={"content-type": "image/png"}
    )

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_error", True)


async def test_a_200_png_under_another_content_type_is_a_provider_error(
    outside_http: respx.MockRouter, remover: ClipDropRemover
) -> None:
    outside_http.post("https://clipdrop-api.co/remove-background/v1").respond(
        200, content=png(), headers={"content-type": "application/octet-stream"}
    )

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_error", True)
    assert "application/octet-stream" in str(error)


# -- transport failures --


async def test_a_timeout_is_retryable(fake: FakeClipDrop, remover: ClipDropRemover) -> None:
    fake.time_out_next()

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_timeout", True)


async def test_a_server_slower_than_the_timeout_times_out(
    fake: FakeClipDrop, http: httpx.AsyncClient
) -> None:
    remover = ClipDropRemover(http, api_key=API_KEY, timeout_seconds=0.2)
    fake.slow_next(3.0)

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_timeout", True)
    assert "0.2 s" in str(error)
    assert fake.credits == 100


async def test_a_slow_server_within_the_timeout_answers(fake: FakeClipDrop, http: httpx.AsyncClient) -> None:
    remover = ClipDropRemover(http, api_key=API_KEY, timeout_seconds=5.0)
    fake.slow_next(0.05)

    result = await remover.remove_background(png())

    assert result.startswith(b"\x89PNG")
    assert fake.requests[0].extensions["timeout"]["read"] == 5.0


async def test_a_refused_connection_is_retryable(fake: FakeClipDrop, remover: ClipDropRemover) -> None:
    fake.refuse_connection_next()

    error = await refused(remover)

    assert (error.code, error.retryable) == ("provider_unreachable", True)


async def test_the_next_request_after_a_failure_succeeds(
    fake: FakeClipDrop, remover: ClipDropRemover
) -> None:
    fake.fail_next(500)
    await refused(remover)

    assert (await remover.remove_background(png())).startswith(b"\x89PNG")


# -- the fake's own contract --


async def test_fake_without_a_key_answers_401(fake: FakeClipDrop, http: httpx.AsyncClient) -> None:
    response = await http.post(fake.url, files={"image_file": ("a.png", png(), "image/png")})

    assert response.status_code == 401
    assert response.json() == {"error": "No api key provided"}


async def test_fake_requires_the_image_file_field(fake: FakeClipDrop, http: httpx.AsyncClient) -> None:
    response = await http.post(
        fake.url, headers={"x-api-key": API_KEY}, files={"image": ("a.png", png(), "image/png")}
    )

    assert response.status_code == 400
    assert response.json() == {"error": "image_file is required"}


async def test_fake_refuses_an_unacceptable_accept_header(
    fake: FakeClipDrop, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        fake.url,
        headers={"x-api-key": API_KEY, "accept": "application/json"},
        files={"image_file": ("a.png", png(), "image/png")},
    )

    assert response.status_code == 406


def test_retry_after_reads_seconds_and_http_dates() -> None:
    request = httpx.Request("POST", "https://clipdrop-api.co/remove-background/v1")

    def parsed(value: str) -> int | None:
        return retry_after_seconds(httpx.Response(429, headers={"retry-after": value}, request=request))

    assert parsed("7") == 7
    assert parsed("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert parsed("soon") is None

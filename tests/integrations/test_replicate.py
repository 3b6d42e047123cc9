"""ReplicateClient against FakeReplicate (providers.md §0 and §2): predictions, output downloads, the error
mapping and Standard Webhooks verification (with the published golden vector)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from standardwebhooks import Webhook
from standardwebhooks import WebhookVerificationError as StandardWebhookError

from app.errors import ProviderNotConfigured
from app.integrations.images.base import EngineError
from app.integrations.images.replicate import (
    ReplicateClient,
    WebhookVerificationError,
    prediction_from_payload,
)
from tests.fakes.replicate import SEEDREAM, SEEDREAM_VERSION, THROTTLED, FakeReplicate, generate_secret

TOKEN = "r8_TestToken9f8e7d6c5b4a3928170"
SECRET = generate_secret()
PROMPT = {"prompt": "a studio photo of a red sneaker", "size": "2K", "aspect_ratio": "1:1"}
WEBHOOK_URL = "https://api.example.com/webhooks/replicate"

# providers.md §0: replicate-python's and svix's published Standard Webhooks test vector.
GOLDEN_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GOLDEN_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
GOLDEN_TIMESTAMP = 1614265330
GOLDEN_BODY = '{"test": 2432232314}'
GOLDEN_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.fixture
def fake(outside_http: respx.MockRouter) -> FakeReplicate:
    return FakeReplicate(outside_http, api_token=TOKEN, webhook_secret=SECRET)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def replicate(http: httpx.AsyncClient) -> ReplicateClient:
    return ReplicateClient(http, api_token=TOKEN, webhook_secret=SECRET, timeout_seconds=5.0)


async def create_refused(replicate: ReplicateClient, data: dict[str, Any] | None = None) -> EngineError:
    with pytest.raises(EngineError) as caught:
        await replicate.create_prediction(SEEDREAM, PROMPT if data is None else data)
    assert TOKEN not in str(caught.value)
    return caught.value


async def download_refused(replicate: ReplicateClient, url: str, **options: Any) -> EngineError:
    with pytest.raises(EngineError) as caught:
        await replicate.download(url, **options)
    return caught.value


# -- create --


async def test_create_posts_to_the_official_model_endpoint(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    prediction = await replicate.create_prediction(SEEDREAM, PROMPT)

    [request] = fake.requests
    assert request.method == "POST"
    assert str(request.url) == "https://api.replicate.com/v1/models/bytedance/seedream-4/predictions"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"input": PROMPT}
    assert "idempotency-key" not in request.headers
    assert prediction.status == "starting"
    assert prediction.output_urls == []
    assert prediction.error is None
    assert prediction.raw == fake.predictions[prediction.id] | {"status": "starting"}
    assert prediction.raw["urls"]["get"] == f"https://api.replicate.com/v1/predictions/{prediction.id}"


async def test_create_subscribes_the_webhook_to_completion_only(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    prediction = await replicate.create_prediction(
        SEEDREAM, PROMPT, webhook_url=WEBHOOK_URL, idempotency_key="job-42-attempt-1"
    )

    assert fake.created == [{"input": PROMPT, "webhook": WEBHOOK_URL, "webhook_events_filter": ["completed"]}]
    assert fake.webhooks[prediction.id] == (WEBHOOK_URL, ["completed"])
    assert fake.requests[0].headers["idempotency-key"] == "job-42-attempt-1"


async def test_a_versioned_reference_uses_the_predictions_endpoint(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    prediction = await replicate.create_prediction(f"{SEEDREAM}:{SEEDREAM_VERSION}", PROMPT)

    assert str(fake.requests[0].url) == "https://api.replicate.com/v1/predictions"
    assert json.loads(fake.requests[0].content) == {"input": PROMPT, "version": SEEDREAM_VERSION}
    assert prediction.raw["version"] == SEEDREAM_VERSION


@pytest.mark.parametrize(
    "model", ["seedream-4", "bytedance/seedream-4/extra", "../v1/account", "a/b:notahash"]
)
async def test_a_malformed_model_reference_is_refused_before_any_request(
    fake: FakeReplicate, replicate: ReplicateClient, model: str
) -> None:
    with pytest.raises(ValueError, match="model reference"):
        await replicate.create_prediction(model, PROMPT)
    assert fake.requests == []


async def test_the_base_url_is_configurable(outside_http: respx.MockRouter, http: httpx.AsyncClient) -> None:
    fake = FakeReplicate(outside_http, api_token=TOKEN, base_url="http://replicate.internal:9000/")
    replicate = ReplicateClient(http, api_token=TOKEN, base_url="http://replicate.internal:9000/")

    await replicate.create_prediction(SEEDREAM, PROMPT)

    assert str(fake.requests[0].url).startswith("http://replicate.internal:9000/v1/models/")


# -- get --


async def test_get_follows_starting_processing_succeeded(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    created = await replicate.create_prediction(SEEDREAM, PROMPT)

    processing = await replicate.get_prediction(created.id)
    succeeded = await replicate.get_prediction(created.id)
    again = await replicate.get_prediction(created.id)

    assert [processing.status, succeeded.status, again.status] == ["processing", "succeeded", "succeeded"]
    assert processing.output_urls == []
    assert len(succeeded.output_urls) == 1
    assert succeeded.output_urls[0].startswith("https://replicate.delivery/")
    assert succeeded.output_urls == succeeded.raw["output"]
    assert succeeded.raw["completed_at"] is not None
    assert str(fake.requests[-1].url) == f"https://api.replicate.com/v1/predictions/{created.id}"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


async def test_a_failed_prediction_carries_its_error(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    fake.fail_next_prediction("NSFW content detected in the output")
    created = await replicate.create_prediction(SEEDREAM, PROMPT)
    fake.advance(created.id)

    failed = await replicate.get_prediction(created.id)

    assert failed.status == "failed"
    assert failed.error == "NSFW content detected in the output"
    assert failed.output_urls == []


async def test_an_unknown_prediction_is_not_found(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    with pytest.raises(EngineError) as caught:
        await replicate.get_prediction("zzzzzzzzzzzzzzzzzzzzzzzzzz")

    assert (caught.value.code, caught.value.retryable) == ("provider_not_found", False)


@pytest.mark.parametrize("prediction_id", ["", "../../v1/account", "abc?x=1", "a/b"])
async def test_a_malformed_prediction_id_is_refused_before_any_request(
    fake: FakeReplicate, replicate: ReplicateClient, prediction_id: str
) -> None:
    with pytest.raises(ValueError, match="prediction id"):
        await replicate.get_prediction(prediction_id)
    assert fake.requests == []


# -- output normalization --


def payload(**fields: Any) -> dict[str, Any]:
    return {
        "id": "gm3qorzdhgbfurvjtvhg6dckhu",
        "model": SEEDREAM,
        "version": "hidden",
        "status": "succeeded",
    } | fields


@pytest.mark.parametrize(
    ("output", "urls"),
    [
        ("https://replicate.delivery/a/out.png", ["https://replicate.delivery/a/out.png"]),
        (["https://replicate.delivery/a/0.png", "https://replicate.delivery/a/1.png"], None),
        ([], []),
        (None, []),
    ],
    ids=["string", "list", "empty-list", "null"],
)
def test_output_is_normalized_into_a_list_of_urls(output: Any, urls: list[str] | None) -> None:
    prediction = prediction_from_payload(payload(output=output))

    assert prediction.output_urls == (output if urls is None else urls)


@pytest.mark.parametrize("output", [{"url": "https://replicate.delivery/a.png"}, ["https://x/a.png", 3], 42])
def test_an_output_of_another_shape_is_a_provider_error(output: Any) -> None:
    with pytest.raises(EngineError) as caught:
        prediction_from_payload(payload(output=output))

    assert (caught.value.code, caught.value.retryable) == ("provider_error", False)


@pytest.mark.parametrize("fields", [{"id": None}, {"id": ""}, {"status": "exploded"}, {"status": None}])
def test_a_prediction_without_id_or_known_status_is_a_provider_error(fields: dict[str, Any]) -> None:
    with pytest.raises(EngineError) as caught:
        prediction_from_payload(payload(**fields))

    assert (caught.value.code, caught.value.retryable) == ("provider_error", True)


# -- status codes --


async def test_a_wrong_token_is_an_auth_failure_without_echoing_it(
    outside_http: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    FakeReplicate(outside_http, api_token="r8_the_right_one")
    replicate = ReplicateClient(http, api_token=TOKEN)

    error = await create_refused(replicate)

    assert (error.code, error.retryable) == ("provider_auth_failed", False)
    assert "You did not pass a valid authentication token" in str(error)


async def test_a_detail_echoing_the_token_is_scrubbed(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    fake.fail_next(403, f"Token {TOKEN} cannot run this model")

    error = await create_refused(replicate)

    assert (error.code, error.retryable) == ("provider_auth_failed", False)
    assert "Token [redacted] cannot run this model" in str(error)


async def test_402_means_out_of_credit(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    fake.fail_next(402)

    error = await create_refused(replicate)

    assert (error.code, error.retryable) == ("provider_out_of_credits", False)


async def test_422_invalid_input_is_not_retryable(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    error = await create_refused(replicate, {"size": "8K"})

    assert (error.code, error.retryable) == ("invalid_input", False)
    assert "prompt is required" in str(error)
    assert fake.created == []


async def test_429_honours_retry_after_in_the_message(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    fake.fail_next(429, retry_after="30")

    error = await create_refused(replicate)

    assert (error.code, error.retryable) == ("provider_rate_limited", True)
    assert "retry after 30 s" in str(error)
    assert THROTTLED in str(error)


async def test_429_retry_after_may_be_an_http_date(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    fake.fail_next(429, retry_after=when.strftime("%a, %d %b %Y %H:%M:%S GMT"))

    error = await create_refused(replicate)

    seconds = int(str(error).split("retry after ")[1].split(" s")[0])
    assert 85 <= seconds <= 90


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_a_retryable_provider_error(
    fake: FakeReplicate, replicate: ReplicateClient, status: int
) -> None:
    fake.fail_next(status)

    error = await create_refused(replicate)

    assert (error.code, error.retryable) == ("provider_error", True)
    assert f"({status})" in str(error)


async def test_5xx_on_get_is_retryable_too(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    created = await replicate.create_prediction(SEEDREAM, PROMPT)
    fake.fail_next(500)

    with pytest.raises(EngineError) as caught:
        await replicate.get_prediction(created.id)

    assert (caught.value.code, caught.value.retryable) == ("provider_error", True)
    assert (await replicate.get_prediction(created.id)).status == "processing"


@pytest.mark.parametrize("status", [200, 201])
async def test_malformed_json_is_a_retryable_provider_error(
    fake: FakeReplicate, replicate: ReplicateClient, status: int
) -> None:
    fake.answer_malformed_next(status=status)

    error = await create_refused(replicate)

    assert (error.code, error.retryable) == ("provider_error", True)
    assert "not a JSON object" in str(error)


async def test_malformed_json_on_get_is_a_retryable_provider_error(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    fake.answer_malformed_next()

    with pytest.raises(EngineError) as caught:
        await replicate.get_prediction("gm3qorzdhgbfurvjtvhg6dckhu")

    assert (caught.value.code, caught.value.retryable) == ("provider_error", True)


async def test_a_timeout_is_retryable(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    fake.time_out_next()

    error = await create_refused(replicate)

    assert (error.code, error.retryable) == ("provider_timeout", True)
    assert "5 s" in str(error)


async def test_the_timeout_setting_reaches_the_request(fake: FakeReplicate, http: httpx.AsyncClient) -> None:
    await ReplicateClient(http, api_token=TOKEN, timeout_seconds=7.5).create_prediction(SEEDREAM, PROMPT)

    assert fake.requests[0].extensions["timeout"] == {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}


async def test_a_refused_connection_is_retryable(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    fake.refuse_connection_next()

    error = await create_refused(replicate)

    assert (error.code, error.retryable) == ("provider_unreachable", True)


# -- download --


async def succeeded_output(fake: FakeReplicate, replicate: ReplicateClient) -> str:
    created = await replicate.create_prediction(SEEDREAM, PROMPT)
    fake.finish(created.id)
    [url] = (await replicate.get_prediction(created.id)).output_urls
    return url


async def test_download_returns_the_image_without_sending_the_token(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    url = await succeeded_output(fake, replicate)

    data, content_type = await replicate.download(url)

    assert content_type == "image/png"
    assert data == fake.files[url][0]
    assert data.startswith(b"\x89PNG")
    [request] = fake.delivery_requests
    assert "authorization" not in request.headers


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_download_refuses_a_body_over_max_bytes(
    fake: FakeReplicate, replicate: ReplicateClient, chunked: bool
) -> None:
    url = await succeeded_output(fake, replicate)
    fake.chunked_downloads = chunked
    size = len(fake.files[url][0])

    error = await download_refused(replicate, url, max_bytes=size - 1)

    assert (error.code, error.retryable) == ("provider_output_too_large", False)
    assert await replicate.download(url, max_bytes=size) == (fake.files[url][0], "image/png")


async def test_download_refuses_a_declared_oversize_body_before_reading_it(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    url = await succeeded_output(fake, replicate)
    fake.answer_next(
        httpx.Response(
            200,
            content=fake.files[url][0],
            headers={"content-type": "image/png", "content-length": "999999999"},
        ),
        on="delivery",
    )

    error = await download_refused(replicate, url, max_bytes=1_000_000)

    assert (error.code, error.retryable) == ("provider_output_too_large", False)
    assert "is 999999999 bytes" in str(error)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"<html>Oops</html>"),
        ("image/svg+xml", b"<svg/>"),
        ("image/png", b"<html>not png</html>"),
    ],
    ids=["html", "svg", "lying-png"],
)
async def test_download_refuses_anything_but_a_raster_image(
    fake: FakeReplicate, replicate: ReplicateClient, content_type: str, body: bytes
) -> None:
    url = await succeeded_output(fake, replicate)
    fake.answer_next(httpx.Response(200, content=body, headers={"content-type": content_type}), on="delivery")

    error = await download_refused(replicate, url)

    assert (error.code, error.retryable) == ("provider_error", True)


async def test_an_expired_output_is_not_retryable(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    url = await succeeded_output(fake, replicate)
    fake.expire_outputs()

    error = await download_refused(replicate, url)

    assert (error.code, error.retryable) == ("provider_output_expired", False)


@pytest.mark.parametrize(
    ("switch", "code", "retryable"),
    [
        ("time_out_next", "provider_timeout", True),
        ("refuse_connection_next", "provider_unreachable", True),
        ("fail_next_500", "provider_error", True),
        ("fail_next_429", "provider_rate_limited", True),
        ("redirect", "provider_error", False),
    ],
)
async def test_download_failures(
    fake: FakeReplicate, replicate: ReplicateClient, switch: str, code: str, retryable: bool
) -> None:
    url = await succeeded_output(fake, replicate)
    if switch.startswith("fail_next_"):
        fake.fail_next(int(switch.rsplit("_", 1)[1]), on="delivery")
    elif switch == "redirect":
        fake.answer_next(
            httpx.Response(302, headers={"location": "https://evil.example/x.png"}), on="delivery"
        )
    else:
        getattr(fake, switch)(on="delivery")

    error = await download_refused(replicate, url)

    assert (error.code, error.retryable) == (code, retryable)


@pytest.mark.parametrize(
    "url",
    [
        "http://replicate.delivery/xezq/a/out.png",
        "https://replicate.delivery.evil.example/a.png",
        "https://evilreplicate.delivery/a.png",
        "https://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
    ],
)
async def test_download_only_fetches_https_delivery_hosts(
    fake: FakeReplicate, replicate: ReplicateClient, url: str
) -> None:
    error = await download_refused(replicate, url)

    assert (error.code, error.retryable) == ("provider_error", False)
    assert fake.delivery_requests == []


async def test_download_accepts_delivery_subdomains(
    outside_http: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    fake = FakeReplicate(outside_http, api_token=TOKEN, delivery_url="https://pbxt.replicate.delivery")
    replicate = ReplicateClient(http, api_token=TOKEN)
    url = await succeeded_output(fake, replicate)

    assert url.startswith("https://pbxt.replicate.delivery/")
    assert (await replicate.download(url))[1] == "image/png"


# -- webhooks: the golden vector (pure HMAC; its timestamp is too old for verify()) --


def test_golden_vector_by_direct_hmac() -> None:
    key = base64.b64decode(GOLDEN_SECRET.removeprefix("whsec_"))
    signed = f"{GOLDEN_ID}.{GOLDEN_TIMESTAMP}.{GOLDEN_BODY}".encode()

    digest = hmac.new(key, signed, hashlib.sha256).digest()

    assert f"v1,{base64.b64encode(digest).decode()}" == GOLDEN_SIGNATURE


def test_golden_vector_with_standardwebhooks_signing() -> None:
    moment = datetime.fromtimestamp(GOLDEN_TIMESTAMP, UTC)

    assert Webhook(GOLDEN_SECRET).sign(GOLDEN_ID, moment, GOLDEN_BODY) == GOLDEN_SIGNATURE


def test_golden_vector_is_refused_by_verify_because_it_is_old(http: httpx.AsyncClient) -> None:
    replicate = ReplicateClient(http, api_token=TOKEN, webhook_secret=GOLDEN_SECRET)
    headers = {
        "webhook-id": GOLDEN_ID,
        "webhook-timestamp": str(GOLDEN_TIMESTAMP),
        "webhook-signature": GOLDEN_SIGNATURE,
    }

    with pytest.raises(WebhookVerificationError, match="too old"):
        replicate.verify_webhook(GOLDEN_BODY.encode(), headers)


# -- webhooks: verify --


async def completed(fake: FakeReplicate, replicate: ReplicateClient) -> dict[str, Any]:
    created = await replicate.create_prediction(SEEDREAM, PROMPT, webhook_url=WEBHOOK_URL)
    return fake.finish(created.id)


async def test_a_signed_webhook_verifies_into_the_prediction(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    state = await completed(fake, replicate)
    body, headers = fake.signed_webhook(state)

    delivered = replicate.verify_webhook(body, headers)

    assert delivered == state
    prediction = prediction_from_payload(delivered)
    assert prediction.status == "succeeded"
    data, content_type = await replicate.download(prediction.output_urls[0])
    assert (data, content_type) == (fake.files[prediction.output_urls[0]][0], "image/png")


async def test_header_names_are_matched_case_insensitively(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    body, headers = fake.signed_webhook(await completed(fake, replicate))

    assert replicate.verify_webhook(body, {key.title(): value for key, value in headers.items()})["id"]


async def test_one_matching_signature_among_several_is_enough(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    state = await completed(fake, replicate)
    body, headers = fake.signed_webhook(state, timestamp=datetime.now(UTC))
    _, other = fake.signed_webhook(
        state, msg_id=headers["webhook-id"], timestamp=datetime.now(UTC), secret=generate_secret()
    )
    headers["webhook-signature"] = f"{other['webhook-signature']} {headers['webhook-signature']}"

    assert replicate.verify_webhook(body, headers) == state


@pytest.mark.parametrize("minutes", [-10, 10], ids=["stale", "future"])
async def test_a_webhook_outside_five_minutes_is_refused(
    fake: FakeReplicate, replicate: ReplicateClient, minutes: int
) -> None:
    body, headers = fake.signed_webhook(
        await completed(fake, replicate), timestamp=datetime.now(UTC) + timedelta(minutes=minutes)
    )

    with pytest.raises(WebhookVerificationError, match="too old" if minutes < 0 else "too new"):
        replicate.verify_webhook(body, headers)


async def test_a_webhook_four_minutes_old_is_accepted(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    state = await completed(fake, replicate)
    body, headers = fake.signed_webhook(state, timestamp=datetime.now(UTC) - timedelta(minutes=4))

    assert replicate.verify_webhook(body, headers) == state


async def test_a_tampered_body_is_refused(fake: FakeReplicate, replicate: ReplicateClient) -> None:
    body, headers = fake.signed_webhook(await completed(fake, replicate))
    tampered = body.replace(b'"status":"succeeded"', b'"status":"failed"')
    assert tampered != body

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        replicate.verify_webhook(tampered, headers)


async def test_a_webhook_signed_with_another_secret_is_refused(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    body, headers = fake.signed_webhook(await completed(fake, replicate), secret=generate_secret())

    with pytest.raises(WebhookVerificationError):
        replicate.verify_webhook(body, headers)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
async def test_a_webhook_missing_a_header_is_refused(
    fake: FakeReplicate, replicate: ReplicateClient, missing: str
) -> None:
    body, headers = fake.signed_webhook(await completed(fake, replicate))
    del headers[missing]

    with pytest.raises(WebhookVerificationError, match="Missing required headers"):
        replicate.verify_webhook(body, headers)


@pytest.mark.parametrize("signature", ["garbage", "v1,not base64!", "v1,a,b"])
async def test_a_garbled_signature_header_is_refused_not_crashed(
    fake: FakeReplicate, replicate: ReplicateClient, signature: str
) -> None:
    body, headers = fake.signed_webhook(await completed(fake, replicate))
    headers["webhook-signature"] = signature

    with pytest.raises(WebhookVerificationError):
        replicate.verify_webhook(body, headers)


def test_a_signed_body_that_is_not_a_json_object_is_refused(
    fake: FakeReplicate, replicate: ReplicateClient
) -> None:
    moment = datetime.now(UTC)
    signature = Webhook(SECRET).sign("msg_1", moment, "[1, 2]")
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }

    with pytest.raises(WebhookVerificationError, match="not a JSON object"):
        replicate.verify_webhook(b"[1, 2]", headers)


def test_a_signed_body_that_is_not_utf8_is_refused(replicate: ReplicateClient) -> None:
    moment = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": "v1,AA==",
    }

    with pytest.raises(WebhookVerificationError):
        replicate.verify_webhook(b"\xff\xfe", headers)


def test_verifying_without_a_secret_is_a_configuration_error(http: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderNotConfigured):
        ReplicateClient(http, api_token=TOKEN).verify_webhook(b"{}", {})


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!not-base64"])
def test_an_unusable_webhook_secret_is_refused_at_construction(http: httpx.AsyncClient, secret: str) -> None:
    with pytest.raises(ValueError, match="whsec_"):
        ReplicateClient(http, api_token=TOKEN, webhook_secret=secret)


def test_an_empty_token_is_refused_at_construction(http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="API token"):
        ReplicateClient(http, api_token="")


# -- the fake's own contract --


async def test_fake_serves_its_webhook_secret(fake: FakeReplicate, http: httpx.AsyncClient) -> None:
    response = await http.get(
        "https://api.replicate.com/v1/webhooks/default/secret", headers={"authorization": f"Bearer {TOKEN}"}
    )

    assert response.json() == {"key": SECRET}


async def test_fake_without_a_token_answers_problem_json(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        "https://api.replicate.com/v1/models/bytedance/seedream-4/predictions", json={}
    )

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass a valid authentication token",
        "status": 401,
    }


async def test_fake_cancels_a_running_prediction(
    fake: FakeReplicate, replicate: ReplicateClient, http: httpx.AsyncClient
) -> None:
    created = await replicate.create_prediction(SEEDREAM, PROMPT)
    response = await http.post(
        f"https://api.replicate.com/v1/predictions/{created.id}/cancel",
        headers={"authorization": f"Bearer {TOKEN}"},
    )

    assert response.json()["status"] == "canceled"
    assert (await replicate.get_prediction(created.id)).status == "canceled"


def test_fake_signature_is_what_the_standard_library_verifies(fake: FakeReplicate) -> None:
    state = {"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "succeeded", "output": []}
    body, headers = fake.signed_webhook(state)

    assert Webhook(SECRET).verify(body, headers) == state
    with pytest.raises(StandardWebhookError):
        Webhook(generate_secret()).verify(body, headers)

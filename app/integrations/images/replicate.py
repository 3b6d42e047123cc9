"""Replicate's HTTP API (providers.md §2) over an injected httpx client, without the replicate SDK.

* ``create_prediction("owner/name", input)`` → ``POST /v1/models/{owner}/{name}/predictions`` (official
  models); ``"owner/name:<version>"`` → ``POST /v1/predictions`` with that version.
* ``get_prediction(id)`` → ``GET /v1/predictions/{id}``.
* ``download(url)`` streams an output file from ``replicate.delivery`` (temporary public URLs: no token
  is sent).
* ``verify_webhook(body, headers)`` checks a Standard Webhooks signature (``webhook-id`` /
  ``webhook-timestamp`` / ``webhook-signature``) with the ``whsec_`` secret, ±5 minutes.

Errors are RFC 7807 ``{"title", "detail", "status"}``; we branch on the status, never on the text. Every
failure is an :class:`EngineError` whose message never contains the API token.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Collection, Mapping
from typing import Any, Final, Literal, cast
from urllib.parse import quote, urlsplit

import httpx
import structlog
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook
from standardwebhooks.webhooks import WebhookVerificationError as _StandardWebhookError

from app.errors import ProviderNotConfigured
from app.integrations.images.base import (
    EngineError,
    Prediction,
    ProviderFailures,
    retry_after_seconds,
    sniff_image_type,
)

log = structlog.get_logger("app.integrations.replicate")

REPLICATE_DEFAULT_BASE_URL: Final = "https://api.replicate.com"
DELIVERY_HOSTS: Final = ("replicate.delivery",)
"""Hosts (and their subdomains) output files are downloaded from."""

PredictionStatus = Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
STATUSES: Final[frozenset[str]] = frozenset(
    {"starting", "processing", "succeeded", "failed", "canceled", "aborted"}
)
TERMINAL_STATUSES: Final[frozenset[str]] = frozenset({"succeeded", "failed", "canceled", "aborted"})

# Content types `download` accepts; the body's own bytes must agree with the declared one.
OUTPUT_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/webp"})

_MODEL = re.compile(
    r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[A-Za-z0-9][\w.-]*)(?::(?P<version>[0-9a-f]{64}))?$"
)
_PREDICTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_MAX_DETAIL_CHARS: Final = 300


class WebhookVerificationError(Exception):
    """A webhook delivery is not authentic (bad or missing signature, stale or future timestamp) or not a
    JSON object. Answer 400 and do not act on it."""


class ReplicateClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_token: str,
        base_url: str = REPLICATE_DEFAULT_BASE_URL,
        webhook_secret: str | None = None,
        timeout_seconds: float = 30.0,
        delivery_hosts: Collection[str] = DELIVERY_HOSTS,
    ) -> None:
        if not api_token.strip():
            raise ValueError("Replicate needs an API token")
        self._http = http
        self._api_token = api_token
        self._fail = ProviderFailures("replicate", api_token)
        self._scrub = self._fail.scrub
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.delivery_hosts = tuple(host.lower() for host in delivery_hosts)
        self._webhook: Webhook | None = None
        if webhook_secret:
            try:
                self._webhook = Webhook(webhook_secret)
            except (ValueError, EmptyWebhookSecretError):
                raise ValueError("The Replicate webhook secret must be whsec_<base64>") from None

    def __repr__(self) -> str:
        return f"ReplicateClient(base_url={self.base_url!r}, timeout_seconds={self.timeout_seconds})"

    # -- predictions --

    async def create_prediction(
        self,
        model: str,
        input: dict[str, Any],
        *,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Prediction:
        """Start a prediction; it comes back ``starting`` (poll ``get_prediction`` or wait for the webhook).

        ``webhook_url`` subscribes to the ``completed`` event only. ``idempotency_key`` is sent as an
        ``Idempotency-Key`` header, which Replicate does not document honouring: a timed-out create may
        still have started a prediction, so callers must not treat a retry as free.
        """
        match = _MODEL.match(model)
        if match is None:
            raise ValueError(f"Not a Replicate model reference (owner/name[:version]): {model!r}")
        payload: dict[str, Any] = {"input": input}
        if match["version"]:
            path = "/v1/predictions"
            payload["version"] = match["version"]
        else:
            path = f"/v1/models/{quote(match['owner'], safe='')}/{quote(match['name'], safe='')}/predictions"
        if webhook_url is not None:
            payload["webhook"] = webhook_url
            payload["webhook_events_filter"] = ["completed"]
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}

        body = await self._request("POST", path, json=payload, headers=headers, expected=(200, 201))
        prediction = prediction_from_payload(body)
        log.info(
            "replicate.prediction_created",
            prediction_id=prediction.id,
            model=model,
            status=prediction.status,
            webhook=webhook_url is not None,
        )
        return prediction

    async def get_prediction(self, id: str) -> Prediction:
        if not _PREDICTION_ID.match(id):
            raise ValueError(f"Not a Replicate prediction id: {id!r}")
        body = await self._request("GET", f"/v1/predictions/{id}", expected=(200,))
        prediction = prediction_from_payload(body)
        log.debug("replicate.prediction_fetched", prediction_id=prediction.id, status=prediction.status)
        return prediction

    # -- output files --

    async def download(self, url: str, max_bytes: int = 30_000_000) -> tuple[bytes, str]:
        """The bytes and content type (``image/png|jpeg|webp``) of an output file.

        Only ``https`` URLs on the delivery hosts are fetched, without our token and without following
        redirects. The body is streamed and abandoned as soon as it exceeds ``max_bytes``. Output URLs
        expire (an hour after the prediction): 404/410 → ``provider_output_expired``, not retryable.
        """
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" or not any(
            host == allowed or host.endswith(f".{allowed}") for allowed in self.delivery_hosts
        ):
            raise EngineError(
                "provider_error",
                f"Refusing to download a Replicate output from {parts.scheme}://{host or '?'}: "
                f"only https on {', '.join(self.delivery_hosts)}.",
                retryable=False,
            )
        try:
            async with self._http.stream(
                "GET", url, timeout=self.timeout_seconds, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise self._download_status_error(response)
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if content_type not in OUTPUT_TYPES:
                    raise self._fail(
                        "provider_error",
                        f"Replicate output is {content_type or 'of no content type'}, "
                        "not a PNG/JPEG/WEBP image.",
                        retryable=True,
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise self._too_large(int(declared), max_bytes)
                chunks: list[bytes] = []
                received = 0
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > max_bytes:
                        raise self._too_large(received, max_bytes, at_least=True)
                    chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise self._fail(
                "provider_timeout",
                f"Replicate's file host did not answer within {self.timeout_seconds:g} s "
                f"({type(exc).__name__}).",
                retryable=True,
            ) from exc
        except httpx.TransportError as exc:
            raise self._fail(
                "provider_unreachable",
                f"Replicate's file host is unreachable ({type(exc).__name__}).",
                retryable=True,
            ) from exc
        except httpx.RequestError as exc:
            raise self._fail(
                "provider_error",
                f"Replicate's file could not be read ({type(exc).__name__}).",
                retryable=True,
            ) from exc

        data = b"".join(chunks)
        if sniff_image_type(data) != content_type:
            raise self._fail(
                "provider_error",
                f"Replicate output claims {content_type} but its bytes are not that format.",
                retryable=True,
            )
        log.info("replicate.output_downloaded", host=host, content_type=content_type, size_bytes=len(data))
        return data, content_type

    # -- webhooks --

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """The delivered prediction, once its Standard Webhooks signature and timestamp (±5 min) check out.

        Pass the raw request body (before any JSON parsing). Raises :class:`WebhookVerificationError`
        otherwise, and ``ProviderNotConfigured`` without a webhook secret.
        """
        if self._webhook is None:
            raise ProviderNotConfigured("Replicate webhooks need REPLICATE_WEBHOOK_SECRET.")
        lowered = {key.lower(): value for key, value in headers.items()}
        try:
            payload = self._webhook.verify(body, lowered)
        except _StandardWebhookError as exc:
            raise WebhookVerificationError(f"Replicate webhook refused: {exc}") from None
        except (ValueError, binascii.Error) as exc:
            # A garbled signature header, a body that is not UTF-8 or not JSON.
            raise WebhookVerificationError(
                f"Replicate webhook refused: malformed ({type(exc).__name__})"
            ) from None
        if not isinstance(payload, dict):
            raise WebhookVerificationError("Replicate webhook refused: the body is not a JSON object")
        return cast(dict[str, Any], payload)

    # -- plumbing --

    async def _request(
        self,
        method: str,
        path: str,
        *,
        expected: tuple[int, ...],
        json: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        try:
            response = await self._http.request(
                method,
                f"{self.base_url}{path}",
                json=json,
                headers={
                    "authorization": f"Bearer {self._api_token}",
                    "accept": "application/json",
                    **(headers or {}),
                },
                timeout=self.timeout_seconds,
            )
        except httpx.TimeoutException as exc:
            raise self._fail(
                "provider_timeout",
                f"Replicate did not answer {method} {path} within {self.timeout_seconds:g} s "
                f"({type(exc).__name__}).",
                retryable=True,
            ) from exc
        except httpx.TransportError as exc:
            raise self._fail(
                "provider_unreachable", f"Replicate is unreachable ({type(exc).__name__}).", retryable=True
            ) from exc
        except httpx.RequestError as exc:
            raise self._fail(
                "provider_error",
                f"Replicate's answer could not be read ({type(exc).__name__}).",
                retryable=True,
            ) from exc

        if response.status_code not in expected:
            raise self._status_error(response, f"{method} {path}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self._fail(
                "provider_error",
                f"Replicate answered {method} {path} ({response.status_code}) "
                "with a body that is not a JSON object.",
                retryable=True,
                status_code=response.status_code,
            )
        return body

    def _status_error(self, response: httpx.Response, what: str) -> EngineError:
        status = response.status_code
        detail = self._scrub(_problem_detail(response))
        suffix = f": {detail}" if detail else ""
        if status in (401, 403):
            return self._fail(
                "provider_auth_failed",
                f"Replicate refused the API token ({status}); check REPLICATE_API_TOKEN{suffix}",
                retryable=False,
                status_code=status,
            )
        if status == 402:
            return self._fail(
                "provider_out_of_credits",
                f"The Replicate account cannot pay for predictions (402){suffix}",
                retryable=False,
                status_code=status,
            )
        if status in (400, 422):
            return self._fail(
                "invalid_input",
                f"Replicate refused the input ({status}){suffix}",
                retryable=False,
                status_code=status,
            )
        if status == 404:
            return self._fail(
                "provider_not_found",
                f"Replicate has no such resource: {what} (404){suffix}",
                retryable=False,
                status_code=status,
            )
        if status == 429:
            retry_after = retry_after_seconds(response)
            wait = f"; retry after {retry_after} s" if retry_after is not None else ""
            return self._fail(
                "provider_rate_limited",
                f"Replicate rate limit reached (429){wait}{suffix}",
                retryable=True,
                status_code=status,
            )
        if status >= 500:
            return self._fail(
                "provider_error",
                f"Replicate failed on {what} ({status}){suffix}",
                retryable=True,
                status_code=status,
            )
        return self._fail(
            "provider_error",
            f"Replicate refused {what} ({status}){suffix}",
            retryable=False,
            status_code=status,
        )

    def _download_status_error(self, response: httpx.Response) -> EngineError:
        status = response.status_code
        if status in (403, 404, 410):
            # The delivery host answers these once the temporary URL has expired (data removed after 1 h).
            return self._fail(
                "provider_output_expired",
                f"The Replicate output file is gone ({status}); its URL is temporary.",
                retryable=False,
                status_code=status,
            )
        if status == 429:
            retry_after = retry_after_seconds(response)
            wait = f"; retry after {retry_after} s" if retry_after is not None else ""
            return self._fail(
                "provider_rate_limited",
                f"Replicate's file host rate limit reached (429){wait}",
                retryable=True,
                status_code=status,
            )
        if 300 <= status < 400:
            return self._fail(
                "provider_error",
                f"Replicate's file host redirected ({status}); redirects are not followed.",
                retryable=False,
                status_code=status,
            )
        return self._fail(
            "provider_error",
            f"Replicate's file host answered {status}.",
            retryable=status >= 500,
            status_code=status,
        )

    def _too_large(self, size: int, max_bytes: int, *, at_least: bool = False) -> EngineError:
        more = "more than " if at_least else ""
        return self._fail(
            "provider_output_too_large",
            f"The Replicate output is {more}{size} bytes; the limit is {max_bytes}.",
            retryable=False,
        )


def prediction_from_payload(payload: Mapping[str, Any]) -> Prediction:
    """A :class:`Prediction` from Replicate's prediction JSON (an API answer or a webhook body).

    ``output`` may be a URL or a list of URLs (seedream-4 answers a list even for one image); it is null
    until the prediction succeeds and again once Replicate deleted the data (after an hour).
    """
    prediction_id = payload.get("id")
    status = payload.get("status")
    if not isinstance(prediction_id, str) or not prediction_id or status not in STATUSES:
        raise EngineError(
            "provider_error",
            f"Replicate answered a prediction without a usable id/status (status={status!r}).",
            retryable=True,
        )
    output = payload.get("output")
    urls: list[str]
    if output is None:
        urls = []
    elif isinstance(output, str):
        urls = [output]
    elif isinstance(output, list) and all(isinstance(item, str) for item in output):
        urls = list(output)
    else:
        raise EngineError(
            "provider_error",
            f"Replicate prediction {prediction_id} has an output of an unexpected shape "
            f"({type(output).__name__}).",
            retryable=False,
        )
    error = payload.get("error")
    return Prediction(
        id=prediction_id,
        status=cast(PredictionStatus, status),
        output_urls=urls,
        error=None if error is None else str(error),
        raw=dict(payload),
    )


def _problem_detail(response: httpx.Response) -> str:
    """``detail`` (else ``title``) of an RFC 7807 body, shortened; empty when there is none."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    for key in ("detail", "title"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:_MAX_DETAIL_CHARS]
    return ""

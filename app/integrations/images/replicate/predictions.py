"""Predictions (providers.md §2) and their output files.

* ``create_prediction("owner/name", input)`` → ``POST /v1/models/{owner}/{name}/predictions`` (official
  models); ``"owner/name:<version>"`` → ``POST /v1/predictions`` with that version.
* ``get_prediction(id)`` → ``GET /v1/predictions/{id}``.
* ``download(url)`` streams an output file from ``replicate.delivery`` (temporary public URLs: no token
  is sent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import quote, urlsplit

import httpx

from app.integrations.images.base import (
    EngineError,
    Prediction,
    sniff_image_type,
)
from app.integrations.images.replicate._base import (
    MODEL_REFERENCE,
    OUTPUT_TYPES,
    RESOURCE_ID,
    STATUSES,
    PredictionStatus,
    ReplicateBase,
    log,
)
from app.integrations.outbound import ForbiddenDestination


class PredictionsApi(ReplicateBase):
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
        match = MODEL_REFERENCE.match(model)
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
        if not RESOURCE_ID.match(id):
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
            async with self._download_http.stream(
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
        except ForbiddenDestination as exc:
            raise EngineError(
                "provider_error", f"Refusing to download a Replicate output: {exc}.", retryable=False
            ) from exc
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

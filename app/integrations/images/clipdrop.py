"""ClipDrop's Remove Background API (providers.md §1) over an injected httpx client.

``POST {base_url}/remove-background/v1`` with ``x-api-key`` and a multipart ``image_file``; 200 answers the
PNG (same size as the input) with ``x-remaining-credits`` / ``x-credits-consumed``; errors answer
``{"error": "..."}`` with a status we branch on (never on the message text).
"""

from __future__ import annotations

import time
from typing import Final

import httpx
import structlog

from app.integrations.images.base import (
    IMAGE_EXTENSIONS,
    EngineError,
    ProviderFailures,
    retry_after_seconds,
    sniff_image_type,
)
from app.metrics import ProviderOutages

log = structlog.get_logger("app.integrations.clipdrop")

CLIPDROP_DEFAULT_BASE_URL: Final = "https://clipdrop-api.co"
REMOVE_BACKGROUND_PATH: Final = "/remove-background/v1"
# ClipDrop's documented input limit; bigger files are refused here instead of spending a round trip.
MAX_INPUT_BYTES: Final = 30 * 1024 * 1024
# ClipDrop refuses inputs over 25 megapixels (400 "resolution is too big"); the job scales a bigger one
# down to this first, since an operator may accept larger uploads than that.
MAX_INPUT_PIXELS: Final = 25_000_000

PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_MAX_DETAIL_CHARS: Final = 200


# ClipDrop's documented input types.
ACCEPTED_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/webp"})


class ClipDropRemover:
    """A :class:`~app.integrations.images.base.BackgroundRemover` backed by ClipDrop.

    Every failure is an :class:`EngineError`; its message never contains the API key.
    """

    name: str = "clipdrop"
    max_input_pixels: int | None = MAX_INPUT_PIXELS

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str = CLIPDROP_DEFAULT_BASE_URL,
        timeout_seconds: float = 60.0,
        outages: ProviderOutages | None = None,
    ) -> None:
        if not api_key.strip():
            raise ValueError("ClipDrop needs an API key")
        self._http = http
        self._api_key = api_key
        self._fail = ProviderFailures("clipdrop", api_key, outages)
        self._scrub = self._fail.scrub
        self.url = f"{base_url.rstrip('/')}{REMOVE_BACKGROUND_PATH}"
        self.timeout_seconds = timeout_seconds

    def __repr__(self) -> str:
        return f"ClipDropRemover(url={self.url!r}, timeout_seconds={self.timeout_seconds})"

    async def remove_background(self, image: bytes) -> bytes:
        content_type = sniff_image_type(image)
        if content_type not in ACCEPTED_TYPES:
            raise EngineError(
                "invalid_image", "ClipDrop accepts PNG, JPEG or WEBP images only.", retryable=False
            )
        if len(image) > MAX_INPUT_BYTES:
            raise EngineError(
                "invalid_image",
                f"The image is {len(image)} bytes; ClipDrop accepts at most {MAX_INPUT_BYTES}.",
                retryable=False,
            )

        started = time.perf_counter()
        try:
            response = await self._http.post(
                self.url,
                headers={"x-api-key": self._api_key, "accept": "image/png"},
                files={"image_file": (f"image.{IMAGE_EXTENSIONS[content_type]}", image, content_type)},
                timeout=self.timeout_seconds,
            )
        except httpx.TimeoutException as exc:
            raise self._fail(
                "provider_timeout",
                f"ClipDrop did not answer within {self.timeout_seconds:g} s ({type(exc).__name__}).",
                retryable=True,
            ) from exc
        except httpx.TransportError as exc:
            raise self._fail(
                "provider_unreachable", f"ClipDrop is unreachable ({type(exc).__name__}).", retryable=True
            ) from exc
        except httpx.RequestError as exc:
            raise self._fail(
                "provider_error",
                f"ClipDrop's answer could not be read ({type(exc).__name__}).",
                retryable=True,
            ) from exc
        elapsed_ms = round((time.perf_counter() - started) * 1000)

        if response.status_code != 200:
            raise self._status_error(response)

        answered_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        body = response.content
        if answered_type != "image/png" or not body.startswith(PNG_MAGIC):
            raise self._fail(
                "provider_error",
                f"ClipDrop answered 200 with {answered_type or 'no content type'} "
                f"({len(body)} bytes) instead of a PNG image.",
                retryable=True,
                status_code=200,
            )

        log.info(
            "clipdrop.background_removed",
            remaining_credits=_int_header(response, "x-remaining-credits"),
            credits_consumed=_int_header(response, "x-credits-consumed"),
            input_bytes=len(image),
            output_bytes=len(body),
            elapsed_ms=elapsed_ms,
        )
        return body

    def _status_error(self, response: httpx.Response) -> EngineError:
        status = response.status_code
        detail = self._scrub(_error_detail(response))
        suffix = f": {detail}" if detail else ""
        if status == 400:
            return self._fail(
                "invalid_image",
                f"ClipDrop refused the image (400){suffix}",
                retryable=False,
                status_code=status,
            )
        if status in (401, 403):
            return self._fail(
                "provider_auth_failed",
                f"ClipDrop refused the API key ({status}); check CLIPDROP_API_KEY{suffix}",
                retryable=False,
                status_code=status,
            )
        if status == 402:
            return self._fail(
                "provider_out_of_credits",
                f"The ClipDrop account has no credits left (402){suffix}",
                retryable=False,
                status_code=status,
            )
        if status == 429:
            retry_after = retry_after_seconds(response)
            wait = f"; retry after {retry_after} s" if retry_after is not None else ""
            return self._fail(
                "provider_rate_limited",
                f"ClipDrop rate limit reached (429){wait}{suffix}",
                retryable=True,
                status_code=status,
            )
        if status >= 500:
            return self._fail(
                "provider_error", f"ClipDrop failed ({status}){suffix}", retryable=True, status_code=status
            )
        # 406 (our Accept header) and anything else unexpected: a bug on our side, not worth retrying.
        return self._fail(
            "provider_error",
            f"ClipDrop refused the request ({status}){suffix}",
            retryable=False,
            status_code=status,
        )


def _error_detail(response: httpx.Response) -> str:
    """ClipDrop's ``{"error": "..."}`` message, shortened; empty when the body is not that shape."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, str):
        return ""
    return error[:_MAX_DETAIL_CHARS]


def _int_header(response: httpx.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None

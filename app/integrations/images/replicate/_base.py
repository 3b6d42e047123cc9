"""The plumbing every part of the Replicate client shares: the token, the base URL, one request helper
and the mapping of Replicate's RFC 7807 errors (``{"title", "detail", "status"}``) to EngineErrors. We
branch on the status, never on the text; no message ever contains the API token."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Final, Literal

import httpx
import structlog
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from app.integrations.images.base import EngineError, ProviderFailures, retry_after_seconds
from app.metrics import ProviderOutages

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

MODEL_REFERENCE = re.compile(
    r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[A-Za-z0-9][\w.-]*)(?::(?P<version>[0-9a-f]{64}))?$"
)
# Prediction, training and file ids are opaque: letters, digits, `_` and `-` (file ids are base64).
RESOURCE_ID = re.compile(r"^[A-Za-z0-9_=-]{1,128}$")
_MAX_DETAIL_CHARS: Final = 300


# Replicate's answer by status: our error code, its message ({what}, {status}, {wait}), and whether a
# retry may help. 5xx and anything else unlisted fall back in `_status_error`.
_STATUS_ERRORS: dict[int, tuple[str, str, bool]] = {
    401: (
        "provider_auth_failed",
        "Replicate refused the API token ({status}); check REPLICATE_API_TOKEN",
        False,
    ),
    403: (
        "provider_auth_failed",
        "Replicate refused the API token ({status}); check REPLICATE_API_TOKEN",
        False,
    ),
    402: ("provider_out_of_credits", "The Replicate account cannot pay for predictions (402)", False),
    400: ("invalid_input", "Replicate refused the input ({status})", False),
    422: ("invalid_input", "Replicate refused the input ({status})", False),
    404: ("provider_not_found", "Replicate has no such resource: {what} (404)", False),
    409: ("provider_conflict", "Replicate refused {what}: it exists already (409)", False),
    429: ("provider_rate_limited", "Replicate rate limit reached (429){wait}", True),
}


class ReplicateBase:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_token: str,
        base_url: str = REPLICATE_DEFAULT_BASE_URL,
        webhook_secret: str | None = None,
        timeout_seconds: float = 30.0,
        delivery_hosts: Collection[str] = DELIVERY_HOSTS,
        outages: ProviderOutages | None = None,
        download_http: httpx.AsyncClient | None = None,
    ) -> None:
        if not api_token.strip():
            raise ValueError("Replicate needs an API token")
        self._http = http
        # Output URLs come from Replicate's answers, so they are fetched with a client that reaches
        # public addresses only (app/integrations/outbound.py); `http` serves the API itself.
        self._download_http = download_http or http
        self._api_token = api_token
        self._fail = ProviderFailures("replicate", api_token, outages)
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

    async def _request(
        self,
        method: str,
        path: str,
        *,
        expected: tuple[int, ...],
        json: dict[str, Any] | None = None,
        files: Mapping[str, tuple[str | None, bytes | str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        empty: bool = False,
    ) -> dict[str, Any]:
        """The JSON object answered with one of the `expected` statuses (`empty`: the body is not read,
        an empty dict is returned, for 202/204 answers). Anything else is an EngineError."""
        try:
            response = await self._http.request(
                method,
                f"{self.base_url}{path}",
                json=json,
                files=files,
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
        if empty:
            return {}
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
        wait = ""
        if status == 429 and (retry_after := retry_after_seconds(response)) is not None:
            wait = f"; retry after {retry_after} s"
        code, message, retryable = _STATUS_ERRORS.get(
            status,
            ("provider_error", "Replicate failed on {what} ({status})", True)
            if status >= 500
            else ("provider_error", "Replicate refused {what} ({status})", False),
        )
        return self._fail(
            code,
            message.format(what=what, status=status, wait=wait) + suffix,
            retryable=retryable,
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

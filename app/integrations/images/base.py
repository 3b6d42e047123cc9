"""What every image engine (local or remote) promises, and how it fails."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

import httpx
import structlog
from PIL import Image

from app.db.base import utcnow
from app.metrics import ProviderOutages


class EngineError(Exception):
    """An engine could not produce a result.

    `code` is stable and safe to show a client (e.g. "provider_rate_limited", "provider_timeout",
    "invalid_image", "provider_error"); `retryable` says whether trying again later may succeed
    (timeouts, 429, 5xx) or not (the input was refused, the account is out of credit).
    """

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable

    def __reduce__(self) -> tuple[Callable[[str, str, bool], EngineError], tuple[str, str, bool]]:
        # Raised in an engine's worker process and pickled back: `retryable` is keyword-only, which the
        # default (positional `args`) rebuild would drop.
        return _engine_error, (self.code, str(self), self.retryable)


def _engine_error(code: str, message: str, retryable: bool) -> EngineError:
    return EngineError(code, message, retryable=retryable)


class BackgroundRemover(Protocol):
    name: str
    # The largest input (in pixels) the provider takes; the caller scales a bigger one down to it first.
    # None: no limit beyond the upload's own.
    max_input_pixels: int | None

    async def remove_background(self, image: bytes) -> bytes:
        """`image` is a validated PNG/JPEG/WEBP; returns a PNG with an alpha matte at the input size."""
        ...


@dataclass(frozen=True)
class VectorizeOptions:
    colormode: Literal["color", "binary"] = "color"
    # vtracer's knobs, with its own defaults; preview mode lowers the first two.
    color_precision: int = 6
    filter_speckle: int = 4
    layer_difference: int = 16
    mode: Literal["spline", "polygon", "none"] = "spline"
    max_side: int = 2048
    # The input's sides are divided by this before it is fitted to `max_side` (a preview traces at most
    # half the input's resolution, however small the input).
    downscale: int = 1


class Vectorizer(Protocol):
    name: str

    async def vectorize(self, image: bytes, options: VectorizeOptions) -> str:
        """`image` is a validated PNG/JPEG; returns an SVG document."""
        ...

    async def aclose(self) -> None:
        """Stop whatever it runs on (worker processes) at shutdown."""
        ...


@dataclass(frozen=True)
class Prediction:
    """A Replicate prediction as we use it."""

    id: str
    status: Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
    output_urls: list[str] = field(default_factory=list)
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


class PredictionClient(Protocol):
    """A hosted model run as predictions (Replicate): started, polled, their outputs downloaded, their
    completion delivered by a signed webhook."""

    async def create_prediction(
        self,
        model: str,
        input: dict[str, Any],
        *,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Prediction: ...

    async def get_prediction(self, id: str) -> Prediction: ...

    async def download(self, url: str, max_bytes: int = 30_000_000) -> tuple[bytes, str]:
        """An output file's bytes and content type."""
        ...

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """The delivered prediction, once its signature checks out."""
        ...


@dataclass(frozen=True)
class ProviderFile:
    """A file uploaded to Replicate's Files API: pass `url` as a model input (Replicate resolves it
    server-side; it is an API resource, never a link for a browser)."""

    id: str
    url: str
    size: int
    raw: dict[str, Any] = field(default_factory=dict)


class FileClient(Protocol):
    """Inputs handed to a hosted model without a public URL of ours (Replicate's Files API)."""

    async def upload_file(
        self,
        data: bytes,
        *,
        filename: str,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> ProviderFile: ...


@dataclass(frozen=True)
class Training:
    """A Replicate training (fine-tuning run) as we use it."""

    id: str
    status: Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
    # On success: the trained version, "owner/name:<64-hex>", and its weights' URL.
    version: str | None = None
    weights: str | None = None
    error: str | None = None
    # The page showing the training's logs (urls.web), when Replicate gives one.
    logs_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


class TrainingClient(Protocol):
    """Fine-tuning on Replicate: destination models, trainings started/polled/cancelled, versions."""

    async def get_model(self, owner: str, name: str) -> dict[str, Any] | None:
        """The model, or None when it does not exist."""
        ...

    async def create_model(
        self, owner: str, name: str, *, visibility: str, hardware: str, description: str | None = None
    ) -> dict[str, Any]:
        """Create it; raises EngineError `provider_conflict` when the name is taken."""
        ...

    async def create_training(
        self,
        trainer: str,
        *,
        destination: str,
        input: dict[str, Any],
        webhook_url: str | None = None,
    ) -> Training: ...

    async def get_training(self, id: str) -> Training: ...

    async def cancel_training(self, id: str) -> Training: ...

    async def delete_model_version(self, model: str, version_id: str) -> None: ...


class ReplicateApi(PredictionClient, FileClient, TrainingClient, Protocol):
    """Everything the engines and the clone trainings use of Replicate."""


# --- shared by the engines and by upload validation -----------------------------------------------

# The image types the product handles, by MIME type, with the file extension we store them under.
IMAGE_EXTENSIONS: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG, WEBP or GIF from its leading bytes (never from a name or header)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def encode_image(image: Image.Image, kind: str) -> bytes:
    """`image` encoded as `kind` (Pillow's format name) without the metadata its decoder kept in `info`
    (a JPEG's comment, a WEBP's EXIF and ICC profile): all of it goes but the transparency, which is part
    of the pixels."""
    image.info = {key: value for key, value in image.info.items() if key == "transparency"}
    output = io.BytesIO()
    if kind == "JPEG":
        image.convert("RGB").save(output, "JPEG", quality=95)
    elif kind == "WEBP":
        image.save(output, "WEBP", quality=95)
    elif kind == "GIF":
        image.save(output, "GIF")
    else:
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            image = image.convert("RGBA")
        # Fast, light compression: this copy feeds the engines; size matters less than latency here.
        image.save(output, "PNG", compress_level=1)
    return output.getvalue()


def fit_pixels(data: bytes, max_pixels: int) -> bytes:
    """The same image scaled down (aspect kept) to at most `max_pixels`, or unchanged if it fits.
    CPU-bound: call through `asyncio.to_thread`."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width * height <= max_pixels:
            return data
        scale = (max_pixels / (width * height)) ** 0.5
        kind = image.format if image.format in ("PNG", "JPEG", "WEBP", "GIF") else "PNG"
        resized = image.resize(
            (max(1, int(width * scale)), max(1, int(height * scale))), Image.Resampling.LANCZOS
        )
        return encode_image(resized, kind)


def retry_after_seconds(response: httpx.Response) -> int | None:
    """``Retry-After`` as whole seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0, round(moment.timestamp() - time.time()))


# Failures that are the provider's, not the request's: the call never got an answer.
_OUTAGE_CODES = frozenset({"provider_timeout", "provider_unreachable"})


class ProviderFailures:
    """Builds a provider's EngineErrors: the credential is scrubbed from every message (providers echo
    it back), and each failure is logged once, as `<provider>.failed`. A failure of the provider itself
    (5xx, timeout, unreachable) is also recorded in `outages`, which the provider alert counts."""

    def __init__(self, provider: str, secret: str, outages: ProviderOutages | None = None) -> None:
        self._provider = provider
        self._event = f"{provider}.failed"
        self._secret = secret
        self._outages = outages
        self._log = structlog.get_logger(f"app.integrations.{provider}")

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if text and self._secret else text

    def __call__(
        self, code: str, message: str, *, retryable: bool, status_code: int | None = None
    ) -> EngineError:
        message = self.scrub(message)
        self._log.warning(
            self._event, code=code, status_code=status_code, retryable=retryable, reason=message
        )
        if self._outages is not None and (
            code in _OUTAGE_CODES or (status_code is not None and status_code >= 500)
        ):
            self._outages.record(self._provider, utcnow())
        return EngineError(code, message, retryable=retryable)

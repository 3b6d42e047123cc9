"""What every image engine (local or remote) promises, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


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


class BackgroundRemover(Protocol):
    name: str

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


class Vectorizer(Protocol):
    name: str

    async def vectorize(self, image: bytes, options: VectorizeOptions) -> str:
        """`image` is a validated PNG/JPEG; returns an SVG document."""
        ...


@dataclass(frozen=True)
class Prediction:
    """A Replicate prediction as we use it."""

    id: str
    status: Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
    output_urls: list[str] = field(default_factory=list)
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

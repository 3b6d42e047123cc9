"""A fake ClipDrop Remove Background API speaking its real contract (providers.md §1).

``POST {base_url}/remove-background/v1``:

* ``x-api-key`` missing → 401, unknown → 403, account without credits → 402 (``{"error": "..."}``).
* multipart ``image_file`` required; PNG/JPEG/WEBP by magic bytes; ≤ 30 MB and ≤ 25 megapixels → else 400.
* ``Accept`` outside ``*/*``, ``image/png``, ``image/webp``, ``image/jpg``, ``image/jpeg`` → 406.
* 200: a PNG of the input's size whose alpha keeps a centred ellipse (the "subject") and clears the rest,
  ``x-remaining-credits`` and ``x-credits-consumed: 1``; one credit is spent.

Switches queue up behaviours for the next requests (one each): ``fail_next(status)`` (429/500/… with a JSON
error), ``answer_html_next()`` (a 200 that is not an image), ``time_out_next()``, ``refuse_connection_next()``
and ``slow_next(seconds)`` (times out when ``seconds`` exceeds the request's read timeout, as a real slow
server would, otherwise answers after that delay).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from email import policy
from email.message import Message
from email.parser import BytesParser

import httpx
import respx
from PIL import Image, ImageDraw

MAX_BYTES = 30 * 1024 * 1024
MAX_PIXELS = 25_000_000
ACCEPTED = {"*/*", "image/png", "image/webp", "image/jpg", "image/jpeg"}

_ERRORS = {
    400: "Invalid request",
    401: "No api key provided",
    402: "No remaining credits",
    403: "Invalid api key",
    406: "Not acceptable",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}

Behaviour = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def error(status: int, message: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        json={"error": message or _ERRORS.get(status, "Error")},
        headers=headers,
    )


def cut_out(image: Image.Image) -> bytes:
    """The input as RGBA with a centred ellipse kept opaque and everything else transparent, as PNG."""
    rgba = image.convert("RGBA")
    width, height = rgba.size
    mask = Image.new("L", rgba.size, 0)
    ImageDraw.Draw(mask).ellipse(
        (width // 4, height // 4, max(width // 4, width * 3 // 4 - 1), max(height // 4, height * 3 // 4 - 1)),
        fill=255,
    )
    rgba.putalpha(mask)
    out = io.BytesIO()
    rgba.save(out, format="PNG")
    return out.getvalue()


def multipart_parts(request: httpx.Request) -> dict[str, Message] | None:
    """The form parts by field name, or None when the body is not multipart/form-data."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    raw = f"Content-Type: {content_type}\r\n\r\n".encode() + request.content
    message = BytesParser(policy=policy.HTTP).parsebytes(raw)
    if not message.is_multipart():
        return None
    parts: dict[str, Message] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            parts[name] = part
    return parts


class FakeClipDrop:
    def __init__(
        self,
        router: respx.MockRouter,
        api_key: str = "clipdrop-test-key",
        base_url: str = "https://clipdrop-api.co",
        *,
        credits: int = 100,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.credits = credits
        self.requests: list[httpx.Request] = []
        self.uploads: list[tuple[bytes, str | None, str | None]] = []
        """(bytes, filename, content type) of each ``image_file`` that reached processing."""
        self._script: list[Behaviour] = []
        self.route = router.post(self.url).mock(side_effect=self._serve)

    @property
    def url(self) -> str:
        return f"{self.base_url}/remove-background/v1"

    # -- switches (each applies to one request, in order) --

    def fail_next(
        self, status: int, message: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        """The next request answers ``status`` with ``{"error": message}`` (after the key check for 429/5xx,
        as the real rate limiter and backend sit behind authentication)."""

        async def behaviour(request: httpx.Request) -> httpx.Response:
            return error(status, message, headers)

        self._script.append(behaviour)

    def answer_html_next(self) -> None:
        """A 200 that is not an image (a proxy's or CDN's HTML page)."""

        async def behaviour(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200,
                content=b"<!doctype html><html><body><h1>Service temporarily unavailable</h1></body></html>",
                headers={"content-type": "text/html; charset=utf-8"},
            )

        self._script.append(behaviour)

    def time_out_next(self) -> None:
        async def behaviour(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("timed out", request=request)

        self._script.append(behaviour)

    def refuse_connection_next(self) -> None:
        async def behaviour(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

        self._script.append(behaviour)

    def slow_next(self, seconds: float) -> None:
        """Take ``seconds`` to answer. Mocked transports enforce no timeouts, so this reads the request's
        own read timeout: beyond it, raise ``ReadTimeout`` (without actually waiting that long)."""

        async def behaviour(request: httpx.Request) -> httpx.Response | None:
            read_timeout = request.extensions.get("timeout", {}).get("read")
            if read_timeout is not None and seconds > read_timeout:
                await asyncio.sleep(min(read_timeout, 0.05))
                raise httpx.ReadTimeout("timed out", request=request)
            await asyncio.sleep(seconds)
            return None  # then answer normally

        self._script.append(behaviour)

    # -- HTTP --

    async def _serve(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = request.headers.get("x-api-key")
        if not key:
            return error(401)
        if key != self.api_key:
            return error(403)
        if self._script:
            answer = await self._script.pop(0)(request)
            if answer is not None:
                return answer
        if self.credits <= 0:
            return error(402)
        accept = request.headers.get("accept")
        if (
            accept is not None
            and not {item.split(";")[0].strip().lower() for item in accept.split(",")} & ACCEPTED
        ):
            return error(406)
        return self._remove_background(request)

    def _remove_background(self, request: httpx.Request) -> httpx.Response:
        parts = multipart_parts(request)
        if parts is None:
            return error(400, "Request body must be multipart/form-data")
        part = parts.get("image_file")
        if part is None:
            return error(400, "image_file is required")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if len(data) > MAX_BYTES:
            return error(400, "Image file is too large (max 30MB)")
        if sniff(data) is None:
            return error(400, "Invalid image format, only PNG, JPEG and WEBP are supported")
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    return error(400, "Image resolution is too big (max 25 megapixels)")
                result = cut_out(image)
        except (OSError, ValueError, Image.DecompressionBombError):
            return error(400, "Could not decode the image")
        self.uploads.append((data, part.get_filename(), part.get_content_type()))
        self.credits -= 1
        return httpx.Response(
            200,
            content=result,
            headers={
                "content-type": "image/png",
                "x-remaining-credits": str(self.credits),
                "x-credits-consumed": "1",
            },
        )


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="JPEG")
    return out.getvalue()


def webp(width: int = 64, height: int = 48, color: tuple[int, int, int] = (30, 200, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="WEBP")
    return out.getvalue()

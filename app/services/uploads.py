"""Turning untrusted bytes into a stored, validated image.

The type is decided from the bytes (never the name or the header); the pixel count is checked from the
image header before anything is decoded (decompression bombs); truncated or corrupt files are refused;
EXIF orientation is applied and every metadata block is dropped by re-encoding."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.errors import AppError, BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from app.integrations.images.base import IMAGE_EXTENSIONS, sniff_image_type
from app.models import Upload, UploadOrigin, User
from app.repositories.images import UploadRepository

# Decoding is guarded by our own pixel check below; Pillow's global guard would warn first and then
# raise a different error, so ours is the only one.
Image.MAX_IMAGE_PIXELS = None

# Pillow's format names for the MIME types we accept.
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_FORMATS = {content_type: name for name, content_type in CONTENT_TYPES.items()}


class CorruptImage(BadRequest):
    code = "corrupt_image"
    default_detail = "The image is truncated or corrupt."


class EmptyUpload(BadRequest):
    code = "empty_upload"
    default_detail = "The file is empty."


class NotAnImage(UnsupportedMediaType):
    code = "unsupported_image"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def sniff(data: bytes) -> str | None:
    """Pillow's format name of the image the bytes hold, if it is one we handle."""
    content_type = sniff_image_type(data)
    return _FORMATS.get(content_type) if content_type else None


def clean_image(
    data: bytes, *, allowed: frozenset[str], max_bytes: int, max_pixels: int, max_side: int | None = None
) -> CleanImage:
    """Validate and normalise (CPU-bound: call through `asyncio.to_thread`)."""
    if not data:
        raise EmptyUpload()
    if len(data) > max_bytes:
        raise ImageTooLarge(f"The file is larger than {max_bytes} bytes.")
    kind = sniff(data)
    if kind is None or kind not in allowed:
        names = ", ".join(sorted(allowed))
        raise NotAnImage(f"Only {names} images are accepted; this file is not one of them.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format != kind:
                raise NotAnImage("The file's content does not match an accepted image format.")
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"The image has {width * height} pixels; at most {max_pixels} are accepted."
                )
            probe.load()  # a truncated file fails here
            image = ImageOps.exif_transpose(probe)
            if max_side and max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return CleanImage(_encode(image, kind), kind, image.width, image.height)
    except AppError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptImage() from exc


def fit_pixels(data: bytes, max_pixels: int) -> bytes:
    """The same image scaled down (aspect kept) to at most `max_pixels`, or unchanged if it fits."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width * height <= max_pixels:
            return data
        scale = (max_pixels / (width * height)) ** 0.5
        kind = image.format or "PNG"
        resized = image.resize(
            (max(1, int(width * scale)), max(1, int(height * scale))), Image.Resampling.LANCZOS
        )
        return _encode(resized, kind if kind in CONTENT_TYPES else "PNG")


def _encode(image: Image.Image, kind: str) -> bytes:
    # Saving without `exif`/`info` drops EXIF, XMP, ICC-embedded comments and text chunks.
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


@dataclass(frozen=True)
class StoredUpload:
    upload: Upload
    data: bytes


async def store(
    session: AsyncSession,
    ctx: Container,
    user: User,
    data: bytes,
    *,
    allowed: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP"}),
    max_side: int | None = None,
    origin: UploadOrigin = UploadOrigin.direct,
) -> StoredUpload:
    """Validate, normalise and store the image; returns its row and the stored (clean) bytes."""
    settings = ctx.settings
    clean = await asyncio.to_thread(
        clean_image,
        data,
        allowed=allowed,
        max_bytes=settings.upload_max_bytes,
        max_pixels=settings.upload_max_pixels,
        max_side=max_side,
    )
    upload_id = uuid.uuid4()
    key = f"users/{user.id}/uploads/{upload_id}.{IMAGE_EXTENSIONS[clean.content_type]}"
    await ctx.storage.put(key, clean.data, clean.content_type)
    upload = await UploadRepository(session).add(
        Upload(
            id=upload_id,
            user_id=user.id,
            storage_key=key,
            content_type=clean.content_type,
            width=clean.width,
            height=clean.height,
            size=len(clean.data),
            sha256=hashlib.sha256(clean.data).hexdigest(),
            origin=origin.value,
        )
    )
    return StoredUpload(upload, clean.data)


async def get_owned(session: AsyncSession, user: User, upload_id: uuid.UUID) -> Upload:
    upload = await UploadRepository(session).get(upload_id)
    if upload is None or upload.user_id != user.id:
        raise NotFound("No such upload.")
    return upload


def format_of(upload: Upload) -> str:
    return _FORMATS[upload.content_type]

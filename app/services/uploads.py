"""Turning untrusted bytes into a stored, validated image.

The type is decided from the bytes (never the name or the header); the pixel count is checked from the
image header before anything is decoded (decompression bombs); truncated or corrupt files are refused;
EXIF orientation is applied and every metadata block is dropped by re-encoding; a PNG or JPEG that holds
nothing but its pixels is kept byte for byte instead (a re-encode would only cost time and, for a JPEG,
quality)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import uuid
from dataclasses import dataclass

import imagecodecs
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.errors import (
    AppError,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from app.integrations.images.base import IMAGE_EXTENSIONS, encode_image, sniff_image_type
from app.integrations.storage import StorageError
from app.models import Upload, UploadOrigin
from app.repositories.images import UploadRepository
from app.services import users as users_service

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


class StorageUnavailable(ServiceUnavailable):
    code = "storage_unavailable"
    default_detail = "The image could not be stored right now; nothing was kept. Retry shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "30"})


class UploadTaken(Conflict):
    code = "upload_exists"
    default_detail = "This upload has been made already; ask for a new one."


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
            # Phone cameras write JPEGs with an MPF segment (extra pictures) that Pillow opens as MPO: the
            # first picture is the JPEG, and what is stored is that picture alone.
            decoded_as = "JPEG" if probe.format == "MPO" else probe.format
            if decoded_as != kind:
                raise NotAnImage("The file's content does not match an accepted image format.")
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"The image has {width * height} pixels; at most {max_pixels} are accepted."
                )
            resize = bool(max_side and max(probe.size) > max_side)
            if not resize and _already_clean(probe, data):
                # Nothing to strip, nothing to turn: stored byte for byte, without a lossy re-encode.
                _decode_whole(probe, data)
                return CleanImage(data, kind, width, height)
            probe.load()  # a truncated file fails here
            ImageOps.exif_transpose(probe, in_place=True)
            if max_side and resize:
                probe.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return CleanImage(encode_image(probe, kind), kind, probe.width, probe.height)
    except AppError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptImage() from exc


def _decode_whole(image: Image.Image, data: bytes) -> None:
    """Decode every pixel, to refuse a truncated or corrupt file. An 8-bit PNG without a palette is first
    decoded by libpng in one call, which lets go of the GIL once: Pillow's decoder lets go of it for
    every block and must win it back each time, which in a thread beside a busy event loop cost up to
    5 ms a block (a 512 px photo's PNG: 3.9 ms alone, 36 ms beside a busy thread; 4.1 ms and 9 ms in one
    call). libpng expands other PNGs (16-bit, palettes) to more memory than Pillow keeps them in, and a
    file libpng refuses is judged by Pillow as before (it takes a few libpng does not)."""
    if image.format == "PNG" and data[24:26] in _LIBPNG_AS_IS:
        try:
            imagecodecs.png_decode(data)
            return
        except (imagecodecs.PngError, ValueError):
            pass
    image.load()


# IHDR's bit depth and colour type (greyscale, RGB, greyscale and alpha, RGBA; 8 bits a channel): what
# libpng decodes to the same bytes per pixel as Pillow.
_LIBPNG_AS_IS = frozenset({bytes([8, 0]), bytes([8, 2]), bytes([8, 4]), bytes([8, 6])})


# PNG chunks that only describe pixels; any other (text, EXIF, ICC, time, private chunks) means metadata.
_PIXEL_CHUNKS = frozenset(
    {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"bKGD", b"pHYs"}
)


def _already_clean(image: Image.Image, data: bytes) -> bool:
    """True when the file holds nothing but its pixels: no EXIF (so no orientation to apply), XMP, ICC,
    comment, text, embedded thumbnail or bytes past its end. Only PNG and JPEG are checked this way."""
    if image.format == "JPEG":
        # JFIF and Adobe headers only; not JFXX, whose thumbnail may still show what a crop removed.
        applist: list[tuple[str, bytes]] = getattr(image, "applist", [])
        segments_ok = all(
            (name == "APP0" and payload.startswith(b"JFIF\0"))
            or (name == "APP14" and payload.startswith(b"Adobe"))
            for name, payload in applist
        )
        return segments_ok and "comment" not in image.info and data.endswith(b"\xff\xd9")
    if image.format == "PNG":
        return _png_chunks_only_pixels(data)
    return False


def _png_chunks_only_pixels(data: bytes) -> bool:
    """Pixel chunks only, each once but IDAT, and nothing after IEND. (Hundreds of thousands of repeated
    sBIT chunks cost a decoder seconds: such a file is re-encoded.)"""
    stream = PngImagePlugin.ChunkStream(io.BytesIO(data))
    assert stream.fp is not None
    stream.fp.seek(8)  # past the signature
    seen: set[bytes] = set()
    try:
        while True:
            chunk, position, length = stream.read()
            if chunk not in _PIXEL_CHUNKS or (chunk in seen and chunk != b"IDAT"):
                return False
            seen.add(chunk)
            if chunk == b"IEND":
                return position + length + 4 == len(data)  # nothing hidden after the end
            stream.fp.seek(position + length + 4)  # the chunk's data and CRC
    except (SyntaxError, ValueError, struct.error):
        return False


@dataclass(frozen=True)
class StoredUpload:
    upload: Upload
    data: bytes


async def store(
    session: AsyncSession,
    ctx: Container,
    user_id: uuid.UUID,
    data: bytes,
    *,
    allowed: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP"}),
    max_side: int | None = None,
    origin: UploadOrigin = UploadOrigin.direct,
    upload_id: uuid.UUID | None = None,
) -> StoredUpload:
    """Validate, normalise and store the image; returns its row and the stored (clean) bytes.

    `upload_id`: the id promised before the bytes arrived (an upload policy, services/upload_policy.py);
    an id that holds an upload already is 409 `upload_exists` and stores nothing."""
    clean = await cleaned(ctx, data, allowed=allowed, max_side=max_side)
    return await store_clean(session, ctx, user_id, clean, origin=origin, upload_id=upload_id)


async def cleaned(
    ctx: Container, data: bytes, *, allowed: frozenset[str], max_side: int | None = None
) -> CleanImage:
    """`clean_image` under the settings' limits, in a thread."""
    settings = ctx.settings
    return await asyncio.to_thread(
        clean_image,
        data,
        allowed=allowed,
        max_bytes=settings.upload_max_bytes,
        max_pixels=settings.upload_max_pixels,
        max_side=max_side,
    )


async def store_clean(
    session: AsyncSession,
    ctx: Container,
    user_id: uuid.UUID,
    clean: CleanImage,
    *,
    origin: UploadOrigin = UploadOrigin.direct,
    upload_id: uuid.UUID | None = None,
) -> StoredUpload:
    """`store` for an image `cleaned` already."""
    # Serialised with the account's erasure: stored before it (and erased with the rest) or refused.
    await users_service.lock_open(session, user_id)
    if upload_id is None:
        upload_id = uuid.uuid4()
    elif await UploadRepository(session).get(upload_id) is not None:
        raise UploadTaken()
    key = f"users/{user_id}/uploads/{upload_id}.{IMAGE_EXTENSIONS[clean.content_type]}"
    try:
        await ctx.storage.put(key, clean.data, clean.content_type)
    except StorageError as exc:
        raise StorageUnavailable() from exc
    upload = await UploadRepository(session).add(
        Upload(
            id=upload_id,
            user_id=user_id,
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


async def get_owned(session: AsyncSession, user_id: uuid.UUID, upload_id: uuid.UUID) -> Upload:
    upload = await UploadRepository(session).get(upload_id)
    if upload is None or upload.user_id != user_id:
        raise NotFound("No such upload.")
    return upload


def format_of(upload: Upload) -> str:
    return _FORMATS[upload.content_type]

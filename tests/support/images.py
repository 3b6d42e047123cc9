"""Test images made in memory: nothing is downloaded, everything is deterministic (seeded).

Good inputs: `photo_like` (a person-like figure, shaded and textured, over a smooth gradient: u2netp
gives it a clean matte), `logo_like` (flat colour geometry, no text), `jpeg` variants.
Bad inputs for upload validation: `truncated_png`, `corrupt_pixels_png`, `pdf_named_png`, `png_bomb`,
`oversize`; `short_pixels_png`, which only libpng refuses.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --- good inputs -----------------------------------------------------------------------------------


def photo_like_image(width: int, height: int, *, seed: int = 7) -> Image.Image:
    """An RGB 'portrait': a head and shoulders figure (skin-toned head, red sweater, lit from the upper
    left, with sensor-like noise) on a smooth pale gradient, like a studio photo."""
    rng = np.random.default_rng(seed)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    top = np.array([200, 212, 226], dtype=np.float32)
    bottom = np.array([226, 220, 206], dtype=np.float32)
    blend = 0.8 * ys + 0.2 * xs
    background = top * (1.0 - blend) + bottom * blend
    background += rng.normal(0.0, 1.5, (height, width, 1)).astype(np.float32)

    side = min(width, height)
    cx, head_r, head_y = width / 2, 0.13 * side, 0.30 * height
    head = Image.new("L", (width, height), 0)
    ImageDraw.Draw(head).ellipse(
        [cx - head_r * 0.85, head_y - head_r, cx + head_r * 0.85, head_y + head_r], fill=255
    )
    body = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(body)
    neck = [cx - head_r * 0.35, head_y + head_r * 0.8, cx + head_r * 0.35, head_y + head_r * 1.4]
    draw.rectangle(neck, fill=255)
    draw.ellipse([cx - 0.32 * side, head_y + head_r * 1.2, cx + 0.32 * side, 1.45 * height], fill=255)

    # Light from the upper left: brighter there, darker towards the lower right.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = np.hypot(xx - width * 0.35, yy - height * 0.25) / side
    shade = (1.15 - 0.5 * distance)[..., None]
    texture = rng.normal(0.0, 9.0, (height, width, 1)).astype(np.float32)
    skin = np.array([224, 172, 138], dtype=np.float32) * shade + texture
    sweater = np.array([160, 42, 48], dtype=np.float32) * shade + texture

    def rgb(pixels: np.ndarray) -> Image.Image:
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    blur = ImageFilter.GaussianBlur(max(1.0, side / 400))  # a soft edge, as a lens gives
    picture = Image.composite(rgb(sweater), rgb(background), body.filter(blur))
    return Image.composite(rgb(skin), picture, head.filter(blur))


@functools.lru_cache(maxsize=32)
def photo_like(width: int, height: int, *, seed: int = 7) -> bytes:
    """`photo_like_image` as PNG bytes."""
    return _encode(photo_like_image(width, height, seed=seed), "PNG")


def logo_like_image(size: int) -> Image.Image:
    """An RGB logo: flat colours, hard edges, geometry only (a disc, a ring, a triangle, bars)."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    s = size / 100
    draw.ellipse([10 * s, 10 * s, 60 * s, 60 * s], fill=(20, 60, 160))
    draw.ellipse([22 * s, 22 * s, 48 * s, 48 * s], fill=(255, 255, 255))
    draw.ellipse([29 * s, 29 * s, 41 * s, 41 * s], fill=(240, 170, 20))
    draw.polygon([(55 * s, 90 * s), (75 * s, 45 * s), (95 * s, 90 * s)], fill=(200, 30, 40))
    for i in range(3):
        draw.rectangle([10 * s, (68 + 8 * i) * s, (45 - 8 * i) * s, (73 + 8 * i) * s], fill=(30, 130, 70))
    return image


@functools.lru_cache(maxsize=32)
def logo_like(size: int) -> bytes:
    """`logo_like_image` as PNG bytes."""
    return _encode(logo_like_image(size), "PNG")


def jpeg(
    width: int = 640,
    height: int = 480,
    *,
    kind: Literal["photo", "logo"] = "photo",
    quality: int = 90,
    mode: Literal["RGB", "L", "CMYK"] = "RGB",
    progressive: bool = False,
    orientation: int | None = None,
) -> bytes:
    """A JPEG of `photo_like` (or `logo_like`, square of `width`): greyscale or CMYK with `mode`,
    progressive, or carrying an EXIF orientation tag (e.g. 6: stored sideways, to be shown rotated 90
    degrees clockwise; the stored pixels are then `height` x `width`)."""
    image = photo_like_image(width, height) if kind == "photo" else logo_like_image(width)
    if orientation in (5, 6, 7, 8):  # store it sideways, as a phone held upright does
        image = image.transpose(Image.Transpose.ROTATE_90)
    if mode != "RGB":
        image = image.convert(mode)
    options: dict[str, object] = {"quality": quality, "progressive": progressive}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    return _encode(image, "JPEG", **options)


def webp(width: int = 640, height: int = 480, *, lossless: bool = False) -> bytes:
    return _encode(photo_like_image(width, height), "WEBP", lossless=lossless, quality=85)


def with_alpha(png: bytes, *, transparent_border: int) -> bytes:
    """The image as RGBA, fully transparent within `transparent_border` pixels of its edges."""
    image = Image.open(io.BytesIO(png)).convert("RGBA")
    alpha = Image.new("L", image.size, 0)
    width, height = image.size
    b = transparent_border
    ImageDraw.Draw(alpha).rectangle([b, b, width - 1 - b, height - 1 - b], fill=255)
    image.putalpha(alpha)
    return _encode(image, "PNG")


# --- bad inputs ------------------------------------------------------------------------------------


def truncated_png() -> bytes:
    """A PNG cut off in the middle of its pixel data: the signature and header are valid."""
    whole = photo_like(64, 64)
    return whole[: len(whole) // 2]


def corrupt_pixels_png() -> bytes:
    """A PNG whose every chunk is whole, with a good checksum, in order and nothing after its end, but
    whose pixel data is not a zlib stream: only decoding the pixels finds it out."""
    width = height = 16
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    garbage = np.random.default_rng(3).integers(0, 256, size=200, dtype=np.uint8).tobytes()
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", garbage) + _chunk(b"IEND", b"")


def short_pixels_png() -> bytes:
    """A PNG whose chunks are all whole and in order, whose pixel data is a good zlib stream, but of half
    its rows: libpng refuses it, Pillow decodes it (the missing rows black)."""
    width = height = 16
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    rows = b"".join(b"\x00" + bytes(3 * width) for _ in range(height // 2))  # filter byte, then the row
    return (
        PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
    )


def pdf_named_png() -> bytes:
    """A minimal valid one-page PDF (what a client may upload under a .png name or image/png type)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=4)
def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A complete, valid PNG of `width` x `height` black pixels (1-bit greyscale) of a few tens of KB:
    the rows are compressed one at a time, so nothing near width*height bytes is ever allocated here,
    but a decoder that trusts the header expands it to width*height pixels (400 MP by default)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale, no interlace
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed pixels
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def oversize(bytes_count: int) -> bytes:
    """A valid 16x16 PNG padded, with a private ancillary chunk that decoders skip, to exactly
    `bytes_count` bytes: only a size limit can refuse it."""
    small = _encode(logo_like_image(16), "PNG")
    iend = small.rindex(b"IEND") - 4  # the IEND chunk's length field
    padding = bytes_count - len(small) - 12  # a chunk costs 12 bytes around its data
    if padding < 0:
        raise ValueError(f"a padded PNG is at least {len(small) + 12} bytes")
    return small[:iend] + _chunk(b"paDd", bytes(padding)) + small[iend:]


def _encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=image_format, **options)
    return out.getvalue()

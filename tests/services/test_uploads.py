"""What `clean_image` stores: a file that holds nothing but pixels is kept byte for byte (no lossy
re-encode); anything else (text, EXIF, ICC, comments, private chunks, bytes past the end) is re-encoded
without it."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from app.services.uploads import clean_image
from tests.support.images import logo_like, photo_like, short_pixels_png

ALLOWED = frozenset({"PNG", "JPEG", "WEBP"})


def clean(data: bytes) -> bytes:
    return clean_image(data, allowed=ALLOWED, max_bytes=10**8, max_pixels=10**8).data


def png(**save: object) -> bytes:
    output = io.BytesIO()
    Image.open(io.BytesIO(logo_like(48))).save(output, "PNG", **save)
    return output.getvalue()


def jpeg(**save: object) -> bytes:
    output = io.BytesIO()
    Image.open(io.BytesIO(photo_like(64, 48))).convert("RGB").save(output, "JPEG", quality=90, **save)
    return output.getvalue()


def png_chunks(data: bytes) -> list[bytes]:
    stream = PngImagePlugin.ChunkStream(io.BytesIO(data))
    assert stream.fp is not None
    stream.fp.seek(8)
    chunks = []
    while True:
        chunk, position, length = stream.read()
        chunks.append(chunk)
        if chunk == b"IEND":
            return chunks
        stream.fp.seek(position + length + 4)


def with_private_chunk() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add(b"prVt", b"gps=48.85,2.35")
    return png(pnginfo=info)


def with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    return png(pnginfo=info)


@pytest.mark.parametrize("source", [pytest.param(png(), id="png"), pytest.param(jpeg(), id="jpeg")])
def test_a_file_of_pixels_only_is_kept_byte_for_byte(source: bytes) -> None:
    assert clean(source) == source


@pytest.mark.parametrize(
    ("source", "gone"),
    [
        pytest.param(with_text(), b"Jane Doe", id="png-text"),
        pytest.param(with_private_chunk(), b"gps=", id="png-private-chunk"),
        pytest.param(png() + b"hidden-after-IEND", b"hidden", id="png-trailing-bytes"),
        pytest.param(jpeg(comment=b"shot at home"), b"shot at home", id="jpeg-comment"),
        pytest.param(jpeg() + b"hidden-after-EOI", b"hidden", id="jpeg-trailing-bytes"),
    ],
)
def test_anything_besides_pixels_is_stripped(source: bytes, gone: bytes) -> None:
    assert gone in source
    cleaned = clean(source)
    assert gone not in cleaned
    with Image.open(io.BytesIO(cleaned)) as image, Image.open(io.BytesIO(source)) as original:
        assert image.size == original.size


def with_repeated_chunk(times: int) -> bytes:
    """A pixels-only PNG with its gAMA chunk written `times` times."""
    source = png()
    iend = source.rindex(b"IEND") - 4
    gama = struct.pack(">I", 4) + b"gAMA" + struct.pack(">I", 45455)
    gama += struct.pack(">I", zlib.crc32(gama[4:]))
    return source[:iend] + gama * times + source[iend:]


def test_a_png_with_a_pixel_chunk_written_twice_is_re_encoded() -> None:
    assert clean(with_repeated_chunk(1)) == with_repeated_chunk(1)
    source = with_repeated_chunk(1000)
    cleaned = clean(source)
    assert len(cleaned) < len(source)
    assert png_chunks(cleaned).count(b"gAMA") <= 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"])
def test_a_pixels_only_png_of_any_mode_is_kept_byte_for_byte(mode: str) -> None:
    output = io.BytesIO()
    Image.open(io.BytesIO(logo_like(48))).convert(mode).save(output, "PNG")
    assert clean(output.getvalue()) == output.getvalue()


def test_a_png_that_libpng_refuses_and_pillow_decodes_is_judged_by_pillow_as_before() -> None:
    assert clean(short_pixels_png()) == short_pixels_png()


def test_a_png_keeps_only_pixel_chunks_after_cleaning() -> None:
    assert set(png_chunks(clean(with_private_chunk()))) <= {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}


def test_a_jpeg_with_an_icc_profile_or_exif_is_re_encoded() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    for source in (jpeg(icc_profile=b"\0" * 128), jpeg(exif=exif)):
        cleaned = clean(source)
        assert cleaned != source
        with Image.open(io.BytesIO(cleaned)) as image:
            assert "icc_profile" not in image.info
            assert not image.getexif()


def test_a_webp_loses_its_exif_and_icc_profile() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    output = io.BytesIO()
    Image.open(io.BytesIO(photo_like(64, 48))).save(output, "WEBP", exif=exif, icc_profile=b"\0" * 128)
    source = output.getvalue()
    assert b"SecretCam" in source
    cleaned = clean(source)
    assert b"SecretCam" not in cleaned
    with Image.open(io.BytesIO(cleaned)) as image:
        assert image.format == "WEBP"
        assert "icc_profile" not in image.info

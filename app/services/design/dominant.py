"""The dominant colours of an image, ordered by the area they cover (CPU-bound: call in a thread).

The image is sampled down to at most SAMPLE_PIXELS (nearest neighbour: a sample keeps real colours, where
averaging would invent blends at every edge), transparent pixels are left out, and the rest is
quantized to a few colours by median cut, Pillow's fast octree, or median cut refined by k-means.
Clusters closer than a just-noticeable difference are merged."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.services.design.colors import distance

ImageMode = Literal["median_cut", "octree", "kmeans"]
IMAGE_MODES: tuple[ImageMode, ...] = ("median_cut", "octree", "kmeans")

SAMPLE_PIXELS = 160_000
_CLUSTERS = 10
_KMEANS_ITERATIONS = 8
# Colours nearer than this (ΔE OK) are one colour to the eye: their areas are added up.
_MERGE_DISTANCE = 0.04
# A colour covering less than this share of the opaque area is noise, not a dominant colour.
_MIN_SHARE = 0.005


class UnreadableImage(ValueError):
    pass


@dataclass(frozen=True)
class DominantColor:
    hex: str
    share: float  # of the opaque area, 0..1


def dominant_colors(data: bytes, mode: ImageMode = "median_cut", limit: int = 6) -> list[DominantColor]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                # Decode at a reduced scale straight from the DCT: most of a large JPEG is never decoded.
                image.draft("RGB", _sample_size(image.size))
            sample = _opaque_sample(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage("the image cannot be decoded") from exc
    if sample is None:
        return []
    if mode == "octree":
        quantized = sample.quantize(_CLUSTERS, method=Image.Quantize.FASTOCTREE)
    else:
        kmeans = _KMEANS_ITERATIONS if mode == "kmeans" else 0
        quantized = sample.quantize(_CLUSTERS, method=Image.Quantize.MEDIANCUT, kmeans=kmeans)
    palette = quantized.getpalette() or []
    counts = quantized.getcolors(_CLUSTERS + 1) or []
    total = sum(count for count, _ in counts)
    clusters: list[tuple[str, int]] = sorted(
        (
            ("#{:02x}{:02x}{:02x}".format(*palette[3 * index : 3 * index + 3]), count)
            for count, index in counts
            if isinstance(index, int)
        ),
        key=lambda item: -item[1],
    )
    merged: list[list[str | int]] = []
    for hex_color, count in clusters:
        for kept in merged:
            if distance(str(kept[0]), hex_color) < _MERGE_DISTANCE:
                kept[1] = int(kept[1]) + count
                break
        else:
            merged.append([hex_color, count])
    merged.sort(key=lambda item: -int(item[1]))
    return [
        DominantColor(str(hex_color), round(int(count) / total, 4))
        for hex_color, count in merged[:limit]
        if int(count) / total >= _MIN_SHARE
    ]


def _sample_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, math.sqrt(SAMPLE_PIXELS / max(1, width * height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _opaque_sample(image: Image.Image) -> Image.Image | None:
    """An RGB image of the (mostly) opaque pixels of a downsampled copy, or None if there are none."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    small = image.convert("RGBA" if has_alpha else "RGB")
    if small.size != _sample_size(small.size):
        small = small.resize(_sample_size(small.size), Image.Resampling.NEAREST)
    if not has_alpha:
        return small
    pixels = np.asarray(small)
    if int(pixels[..., 3].min()) >= 128:
        return small.convert("RGB")
    opaque = pixels[pixels[..., 3] >= 128][:, :3]
    if not len(opaque):
        return None
    return Image.fromarray(np.ascontiguousarray(opaque.reshape(1, -1, 3)), "RGB")

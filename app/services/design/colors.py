"""Colour science for palettes (coloraide): parsing, OKLCH, sRGB gamut mapping, WCAG 2.1 contrast,
harmonies, tonal ramps, and contrast repair. Pure functions over `#rrggbb` strings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from coloraide import Color

WHITE = "#ffffff"
BLACK = "#000000"
# WCAG 2.1: 1.4.3 (AA) and 1.4.6 (AAA), normal and large text. Ratios are compared unrounded.
AA = 4.5
AA_LARGE = 3.0
AAA = 7.0

# Tailwind-style shade names of a tonal ramp, light to dark.
SHADES = ("50", "100", "200", "300", "400", "500", "600", "700", "800", "900", "950")
# OKLCH lightness of each shade: brand ramps, and the (flatter at the ends) neutral ramp.
_RAMP_LIGHTNESS = (0.975, 0.94, 0.885, 0.81, 0.715, 0.63, 0.55, 0.475, 0.405, 0.345, 0.26)
_NEUTRAL_LIGHTNESS = (0.985, 0.967, 0.922, 0.87, 0.708, 0.556, 0.439, 0.371, 0.269, 0.205, 0.145)
# Share of the base colour's chroma each shade keeps: pale and deep ends are less saturated.
_RAMP_CHROMA = (0.12, 0.25, 0.45, 0.7, 0.9, 1.0, 1.0, 0.92, 0.8, 0.68, 0.52)
# Below this OKLCH chroma a colour reads as grey; its hue means nothing.
ACHROMATIC = 0.02
# The CSS Color 4 gamut mapping: keep lightness and hue, reduce chroma until the colour fits sRGB.
_FIT = "oklch-chroma"

Harmony = Literal["complementary", "analogous", "triadic", "split_complementary", "square", "monochromatic"]
HARMONIES: tuple[Harmony, ...] = (
    "complementary",
    "analogous",
    "triadic",
    "split_complementary",
    "square",
    "monochromatic",
)
_CORAIDE_HARMONY = {
    "complementary": "complement",
    "analogous": "analogous",
    "triadic": "triad",
    "split_complementary": "split",
    "square": "square",
    "monochromatic": "mono",
}


class InvalidColor(ValueError):
    pass


def parse_css_color(value: str) -> str:
    """Any CSS colour (hex, rgb(), hsl(), oklch(), a name) as `#rrggbb` in sRGB, fitted to the gamut and
    without alpha. For untrusted text (a model's answer): InvalidColor if it is not a colour."""
    text = value.strip()
    if not text or len(text) > 64:
        raise InvalidColor("not a colour")
    try:
        return to_hex(Color(text))
    except (ValueError, TypeError) as exc:
        raise InvalidColor(f"{text!r} is not a colour") from exc


def to_hex(color: Color) -> str:
    srgb = color.convert("srgb")
    if not srgb.in_gamut():
        srgb = color.convert("oklch").fit("srgb", method=_FIT).convert("srgb")
    coords = [0.0 if math.isnan(value) else value for value in srgb[:3]]
    return "#" + "".join(f"{round(min(1.0, max(0.0, value)) * 255):02x}" for value in coords)


def from_oklch(lightness: float, chroma: float, hue: float) -> str:
    """The sRGB colour nearest to an OKLCH one (chroma reduced until it fits, CSS Color 4)."""
    return to_hex(Color("oklch", [min(1.0, max(0.0, lightness)), max(0.0, chroma), hue % 360]))


@dataclass(frozen=True)
class Oklch:
    lightness: float
    chroma: float
    hue: float  # 0 for a grey, whose hue is undefined


def oklch(hex_color: str) -> Oklch:
    lightness, chroma, hue = Color(hex_color).convert("oklch")[:3]
    if math.isnan(hue) or chroma < 1e-4:
        hue, chroma = 0.0, 0.0
    return Oklch(round(lightness, 4), round(chroma, 4), round(hue % 360, 2))


@lru_cache(maxsize=4096)
def luminance(hex_color: str) -> float:
    """WCAG relative luminance, 0 to 1. Kept per colour: a palette asks for the same few colours' contrast
    over and over (each shade against white and black, a background against every repair candidate)."""
    return max(0.0, float(Color(hex_color).luminance()))


def contrast(foreground: str, background: str) -> float:
    """WCAG 2.1 contrast ratio, 1 to 21: coloraide's "wcag21" ratio, from the cached luminances."""
    darker, lighter = sorted((luminance(foreground), luminance(background)))
    return (lighter + 0.05) / (darker + 0.05)


def best_text(background: str) -> str:
    """White or black, whichever contrasts more with `background` (always at least 4.58:1)."""
    return text_for(contrast(WHITE, background), contrast(BLACK, background))


def text_for(contrast_white: float, contrast_black: float) -> str:
    return WHITE if contrast_white >= contrast_black else BLACK


# Finer than any step between two 8-bit sRGB colours of one hue and chroma: the bisection's end.
_LIGHTNESS_STEP = 2e-5


def ensure_contrast(foreground: str, background: str, minimum: float = AA) -> str:
    """`foreground`, or the colour of the same hue and chroma nearest to it in lightness that reaches
    `minimum` against `background` (darker on a light background, lighter on a dark one)."""
    if contrast(foreground, background) >= minimum:
        return foreground
    start = oklch(foreground)
    darker = contrast(BLACK, background) >= contrast(WHITE, background)
    # Bisect on lightness between the colour and the extreme that is sure to pass.
    passing, failing = (0.0, start.lightness) if darker else (1.0, start.lightness)
    best = BLACK if darker else WHITE
    while abs(failing - passing) > _LIGHTNESS_STEP:
        middle = (passing + failing) / 2
        candidate = from_oklch(middle, start.chroma, start.hue)
        if contrast(candidate, background) >= minimum:
            passing, best = middle, candidate
        else:
            failing = middle
    return best if contrast(best, background) >= minimum else best_text(background)


def distance(a: str, b: str) -> float:
    """Perceptual distance (ΔE in OKLab, 0 to about 1; 0.02 is a just-noticeable difference)."""
    return float(Color(a).delta_e(b, method="ok"))


def harmony(base: str, mode: Harmony) -> tuple[str, str]:
    """(secondary, accent) for `base` under an OKLCH harmony (coloraide's, computed in OKLCH)."""
    colors = [to_hex(color) for color in Color(base).harmony(_CORAIDE_HARMONY[mode], space="oklch")]
    # coloraide's list includes the base, at a position that depends on the harmony: drop it.
    others = list(colors)
    others.pop(min(range(len(others)), key=lambda index: distance(others[index], base)))
    if mode == "complementary":
        # One partner only: the accent is the base's analogous neighbour.
        return others[0], harmony(base, "analogous")[1]
    if mode == "square":
        return others[1], others[0]  # the complement, then the next corner
    if mode == "monochromatic":
        return others[1], others[-1]  # a deeper and a paler tone
    return others[-1], others[0]


def ramp(base: str, *, neutral: bool = False) -> dict[str, str]:
    """Eleven shades 50..950 of `base`'s hue. A brand ramp keeps `base` itself as the shade nearest in
    lightness; the neutral ramp is near-grey, tinted with the base's hue."""
    tone = oklch(base)
    if neutral:
        chroma = min(0.018, tone.chroma * 0.12) if tone.chroma >= ACHROMATIC else 0.0
        return {
            shade: from_oklch(lightness, chroma * (0.6 if index in (0, 10) else 1.0), tone.hue)
            for index, (shade, lightness) in enumerate(zip(SHADES, _NEUTRAL_LIGHTNESS, strict=True))
        }
    anchor = min(range(len(SHADES)), key=lambda index: abs(_RAMP_LIGHTNESS[index] - tone.lightness))
    shades = {}
    for index, (shade, lightness, share) in enumerate(
        zip(SHADES, _RAMP_LIGHTNESS, _RAMP_CHROMA, strict=True)
    ):
        if index == anchor:
            shades[shade] = base
            continue
        peak = tone.chroma / max(_RAMP_CHROMA[anchor], 0.1)
        shades[shade] = from_oklch(lightness, peak * share, tone.hue)
    return shades


# Semantic colours: fixed hues that read as their meaning, at lightness/chroma that suit a UI.
_SEMANTIC = {
    "success": Oklch(0.62, 0.17, 150.0),
    "warning": Oklch(0.76, 0.16, 75.0),
    "danger": Oklch(0.58, 0.21, 27.0),
    "info": Oklch(0.62, 0.15, 245.0),
}


SEMANTIC = tuple(_SEMANTIC)


def semantic_colors() -> dict[str, str]:
    return {name: from_oklch(tone.lightness, tone.chroma, tone.hue) for name, tone in _SEMANTIC.items()}


def is_chromatic(hex_color: str) -> bool:
    return oklch(hex_color).chroma >= ACHROMATIC * 2

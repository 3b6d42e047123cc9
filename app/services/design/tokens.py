"""The tokens of a design system besides its palette: type (a font pairing and a modular scale),
spacing, radii and shadows; and the stored shape of all of them.

Stored shapes (the JSON columns of `design_systems`; exports read these):
- colors: {group: {shade: "#rrggbb"}}; shade "50".."950", "DEFAULT" (the group's own colour),
  "foreground" (text on DEFAULT), or any other lower-case key.
- typography: {"families": {name: [font, ...]}, "sizes": {name: "1rem"}, "weights": {name: 400},
  "line_heights": {name: 1.5}}.
- spacing, radii: {name: "0.25rem" | "4px"}.
- shadows: {name: [{"x", "y", "blur", "spread": dimension, "color": "#rrggbbaa"}]}.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from app.services.design import colors
from app.services.design.colors import SEMANTIC

if TYPE_CHECKING:
    from app.services.design.palettes import Palette

Tier = Literal["colors", "full"]

# Heading and body fonts that work together (all on Google Fonts), by character.
FONT_PAIRINGS: dict[str, tuple[str, str]] = {
    "modern": ("Inter", "Inter"),
    "geometric": ("Poppins", "Inter"),
    "editorial": ("Playfair Display", "Source Sans 3"),
    "friendly": ("Nunito", "Nunito Sans"),
    "technical": ("Space Grotesk", "IBM Plex Sans"),
    "classic": ("Merriweather", "Open Sans"),
    "elegant": ("Cormorant Garamond", "Lato"),
    "bold": ("Montserrat", "Roboto"),
}
_SERIF_FONTS = frozenset({"Playfair Display", "Merriweather", "Cormorant Garamond"})
_SANS_FALLBACK = ["ui-sans-serif", "system-ui", "sans-serif"]
_SERIF_FALLBACK = ["ui-serif", "Georgia", "serif"]
_MONO = ["JetBrains Mono", "ui-monospace", "SFMono-Regular", "monospace"]
# CSS generic families: written unquoted in stylesheets.
GENERIC_FAMILIES = frozenset(
    {
        "serif",
        "sans-serif",
        "monospace",
        "cursive",
        "fantasy",
        "system-ui",
        "ui-serif",
        "ui-sans-serif",
        "ui-monospace",
        "ui-rounded",
        "emoji",
        "math",
        "fangsong",
    }
)

TYPE_SCALES: dict[str, float] = {"compact": 1.2, "balanced": 1.25, "dramatic": 1.333}
# Font size steps relative to the 1rem base: xs is two steps down, 5xl six steps up.
_SIZE_STEPS = {"xs": -2, "sm": -1, "base": 0, "lg": 1, "xl": 2, "2xl": 3, "3xl": 4, "4xl": 5, "5xl": 6}
_WEIGHTS = {"regular": 400, "medium": 500, "semibold": 600, "bold": 700}
_LINE_HEIGHTS = {"tight": 1.2, "snug": 1.375, "normal": 1.5, "relaxed": 1.7}
_SPACING_UNITS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24)  # multiples of 0.25rem (4px)
_RADII: dict[str, dict[str, str]] = {
    "sharp": {"none": "0px", "sm": "0.125rem", "md": "0.25rem", "lg": "0.375rem", "xl": "0.5rem"},
    "soft": {"none": "0px", "sm": "0.25rem", "md": "0.5rem", "lg": "0.75rem", "xl": "1rem"},
    "round": {"none": "0px", "sm": "0.5rem", "md": "0.75rem", "lg": "1.25rem", "xl": "1.75rem"},
}
# (y, blur, spread, alpha) per layer; shadows are tinted with the darkest neutral.
_SHADOWS: dict[str, list[tuple[int, int, int, float]]] = {
    "sm": [(1, 2, 0, 0.05)],
    "md": [(4, 6, -1, 0.1), (2, 4, -2, 0.1)],
    "lg": [(10, 15, -3, 0.1), (4, 6, -4, 0.1)],
    "xl": [(20, 25, -5, 0.1), (8, 10, -6, 0.1)],
}


def pairing_for(primary: str) -> str:
    """A font pairing suited to the brand colour when nobody chose one: greys read neutral and modern,
    warm saturated colours bold or friendly, cool ones technical, purples elegant."""
    tone = colors.oklch(primary)
    if tone.chroma < 0.05:
        return "modern"
    if tone.hue < 50 or tone.hue >= 330:
        return "bold"
    if tone.hue < 110:
        return "friendly"
    if tone.hue < 200:
        return "geometric"
    if tone.hue < 270:
        return "technical"
    return "elegant"


def family(font: str) -> list[str]:
    return [font, *(_SERIF_FALLBACK if font in _SERIF_FONTS else _SANS_FALLBACK)]


def typography(pairing: str, scale: str) -> dict[str, Any]:
    heading, body = FONT_PAIRINGS.get(pairing, FONT_PAIRINGS["modern"])
    ratio = TYPE_SCALES.get(scale, TYPE_SCALES["balanced"])
    return {
        "families": {"heading": family(heading), "body": family(body), "mono": list(_MONO)},
        "sizes": {name: rem(ratio**step) for name, step in _SIZE_STEPS.items()},
        "weights": dict(_WEIGHTS),
        "line_heights": dict(_LINE_HEIGHTS),
    }


def rem(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{text}rem"


def spacing() -> dict[str, str]:
    return {str(unit): "0px" if unit == 0 else rem(unit * 0.25) for unit in _SPACING_UNITS}


def radii(style: str) -> dict[str, str]:
    return {**_RADII.get(style, _RADII["soft"]), "full": "9999px"}


def shadows(tint: str) -> dict[str, list[dict[str, str]]]:
    return {
        name: [
            {
                "x": "0px",
                "y": f"{y}px",
                "blur": f"{blur}px",
                "spread": f"{spread}px",
                "color": f"{tint}{round(alpha * 255):02x}",
            }
            for y, blur, spread, alpha in layers
        ]
        for name, layers in _SHADOWS.items()
    }


def color_tokens(palette: Palette) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    for role, hex_color in palette.roles.items():
        groups[role] = {
            **colors.ramp(hex_color),
            "DEFAULT": hex_color,
            "foreground": colors.best_text(hex_color),
        }
    groups["neutral"] = dict(palette.neutral)
    for name in SEMANTIC:
        hex_color = palette.semantic[name]
        groups[name] = {"DEFAULT": hex_color, "foreground": colors.best_text(hex_color)}
    return groups


def system_content(
    palette: Palette, tier: Tier, *, pairing: str | None, scale: str, corners: str
) -> dict[str, Any]:
    """The five token documents of a generated system; a colours-only tier leaves the others empty."""
    content: dict[str, Any] = {
        "colors": color_tokens(palette),
        "typography": {},
        "spacing": {},
        "radii": {},
        "shadows": {},
    }
    if tier == "full":
        content["typography"] = typography(pairing or pairing_for(palette.roles["primary"]), scale)
        content["spacing"] = spacing()
        content["radii"] = radii(corners)
        content["shadows"] = shadows(palette.neutral["950"])
    return content


# --- flat names (CSS custom properties, SCSS variables) ------------------------------------------------


def flat_tokens(content: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(kind, name, value) of every token, named as in CSS without the leading `--`: color-primary-500,
    color-primary (DEFAULT), font-heading, text-base, font-weight-bold, leading-normal, spacing-4,
    radius-md, shadow-md. `kind` tells how to write the value."""
    for group, shades in content.get("colors", {}).items():
        for shade, value in shades.items():
            yield "color", f"color-{group}" if shade == "DEFAULT" else f"color-{group}-{shade}", value
    typography_ = content.get("typography", {})
    for name, fonts in typography_.get("families", {}).items():
        yield "font-family", f"font-{name}", fonts
    for name, value in typography_.get("sizes", {}).items():
        yield "dimension", f"text-{name}", value
    for name, value in typography_.get("weights", {}).items():
        yield "number", f"font-weight-{name}", value
    for name, value in typography_.get("line_heights", {}).items():
        yield "number", f"leading-{name}", value
    for name, value in content.get("spacing", {}).items():
        yield "dimension", f"spacing-{name}", value
    for name, value in content.get("radii", {}).items():
        yield "dimension", f"radius-{name}", value
    for name, layers in content.get("shadows", {}).items():
        yield "shadow", f"shadow-{name}", layers


def colliding_names(content: Mapping[str, Any]) -> list[str]:
    """Flat names two tokens would share (e.g. group `brand-dark` shade `500` and group `brand` shade
    `dark-500`): such a system could not be exported unambiguously."""
    seen: set[str] = set()
    clashes: list[str] = []
    for _, name, _ in flat_tokens(content):
        if name in seen:
            clashes.append(name)
        seen.add(name)
    return clashes

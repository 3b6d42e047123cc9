"""A design system written in the formats designers' tools read:

- `json`: W3C Design Tokens (Format Module 2025.10): colours as objects (`srgb` components plus `hex`),
  `dimension` objects, `fontFamily`, `fontWeight`, `number`, `shadow`; a group's DEFAULT is `$root`.
- `css`: custom properties on `:root`, named like Tailwind v4's theme variables (`--color-primary-500`,
  `--text-base`, `--spacing-4`, ...), so the file also works inside `@theme`.
- `tailwind`: a `tailwind.config.js` (v3 shape, loadable in v4 with `@config`) extending the theme; the
  object is written as JSON, so it is data as well as JavaScript.
- `scss`: `$variables` with `!default`, named like the CSS properties.
- `figma-tokens`: Tokens Studio for Figma's JSON (one `global` set).

Every value comes from validated fields (hex colours, dimensions, numbers, font names of a strict
alphabet), so nothing a user typed can break out of its place in a stylesheet or a script; the system's
name only appears inside JSON strings."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import User
from app.services.design import systems
from app.services.design.errors import PlanRequired
from app.services.design.tokens import GENERIC_FAMILIES, flat_tokens

ExportFormat = Literal["json", "css", "tailwind", "scss", "figma-tokens"]
_DIMENSION = re.compile(r"^(-?[0-9]+(?:\.[0-9]+)?)(px|rem)$")


@dataclass(frozen=True)
class Export:
    content_type: str
    filename: str
    body: str


async def export(
    session: AsyncSession, settings: Settings, user: User | None, system_id: uuid.UUID, fmt: ExportFormat
) -> Export:
    """The user's own system or a shared one, in `fmt`; pro-only formats need a pro plan (403)."""
    view = await systems.get(session, user, system_id)
    if fmt in settings.design_export_pro_formats and (
        user is None or user.plan not in settings.design_pro_plans
    ):
        plans = ", ".join(settings.design_pro_plans) or "none"
        raise PlanRequired(f"The {fmt} export needs one of these plans: {plans}.", extra={"format": fmt})
    system = view.system
    content = {name: getattr(system, name) for name in systems.CONTENT_FIELDS}
    meta = {"id": str(system.id), "name": system.name, "version": system.version}
    slug = _slug(system.name)
    if fmt == "json":
        return Export("application/design-tokens+json", f"{slug}.tokens.json", to_dtcg(content, meta))
    if fmt == "css":
        return Export("text/css; charset=utf-8", f"{slug}.css", to_css(content, meta))
    if fmt == "tailwind":
        return Export("text/javascript; charset=utf-8", "tailwind.config.js", to_tailwind(content, meta))
    if fmt == "scss":
        return Export("text/x-scss; charset=utf-8", f"_{slug}.scss", to_scss(content, meta))
    return Export("application/json", f"{slug}.figma-tokens.json", to_figma_tokens(content, meta))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60].strip("-") or "design-system"


def _header(meta: Mapping[str, Any]) -> str:
    # The id and version only: both are ours (a UUID, an integer), never text a user wrote.
    return f"Pixforge design system {meta['id']}, version {meta['version']}"


# --- W3C Design Tokens ---------------------------------------------------------------------------


def dtcg_color(hex_color: str) -> dict[str, Any]:
    """`#rrggbb` or `#rrggbbaa` as a DTCG colour object."""
    channels = [int(hex_color[index : index + 2], 16) for index in (1, 3, 5)]
    alpha = int(hex_color[7:9], 16) / 255 if len(hex_color) == 9 else 1.0
    return {
        "colorSpace": "srgb",
        "components": [round(channel / 255, 6) for channel in channels],
        "alpha": round(alpha, 6),
        "hex": hex_color[:7],
    }


def dtcg_dimension(value: str) -> dict[str, Any]:
    match = _DIMENSION.fullmatch(value)
    if match is None:
        raise ValueError(f"not a dimension: {value!r}")
    number = float(match.group(1))
    return {"value": int(number) if number.is_integer() else number, "unit": match.group(2)}


def _token_name(key: str) -> str:
    return "$root" if key == "DEFAULT" else key


def to_dtcg_document(content: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "$description": f"{meta['name']} (version {meta['version']})",
        "$extensions": {"app.pixforge": {"id": meta["id"], "name": meta["name"], "version": meta["version"]}},
    }
    if content.get("colors"):
        document["color"] = {
            "$type": "color",
            **{
                group: {_token_name(shade): {"$value": dtcg_color(value)} for shade, value in shades.items()}
                for group, shades in content["colors"].items()
            },
        }
    typography = content.get("typography") or {}
    sections: list[tuple[str, str, Mapping[str, Any], Any]] = [
        ("font", "fontFamily", typography.get("families") or {}, list),
        ("font-size", "dimension", typography.get("sizes") or {}, dtcg_dimension),
        ("font-weight", "fontWeight", typography.get("weights") or {}, int),
        ("line-height", "number", typography.get("line_heights") or {}, float),
        ("spacing", "dimension", content.get("spacing") or {}, dtcg_dimension),
        ("radius", "dimension", content.get("radii") or {}, dtcg_dimension),
    ]
    for group, kind, tokens, convert in sections:
        if tokens:
            document[group] = {
                "$type": kind,
                **{name: {"$value": convert(value)} for name, value in tokens.items()},
            }
    if content.get("shadows"):
        document["shadow"] = {
            "$type": "shadow",
            **{
                name: {
                    "$value": [
                        {
                            "color": dtcg_color(layer["color"]),
                            "offsetX": dtcg_dimension(layer["x"]),
                            "offsetY": dtcg_dimension(layer["y"]),
                            "blur": dtcg_dimension(layer["blur"]),
                            "spread": dtcg_dimension(layer["spread"]),
                        }
                        for layer in layers
                    ]
                }
                for name, layers in content["shadows"].items()
            },
        }
    return document


def to_dtcg(content: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    return json.dumps(to_dtcg_document(content, meta), indent=2, ensure_ascii=False) + "\n"


# --- CSS and SCSS --------------------------------------------------------------------------------


def _font_stack(fonts: list[str]) -> str:
    return ", ".join(font if font in GENERIC_FAMILIES else f'"{font}"' for font in fonts)


def _shadow(layers: list[Mapping[str, str]]) -> str:
    return ", ".join(
        f"{layer['x']} {layer['y']} {layer['blur']} {layer['spread']} {layer['color']}" for layer in layers
    )


def css_value(kind: str, value: Any) -> str:
    if kind == "font-family":
        return _font_stack(value)
    if kind == "shadow":
        return _shadow(value)
    return str(value)


def to_css(content: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    lines = [f"/* {_header(meta)} */", ":root {"]
    lines += [f"  --{name}: {css_value(kind, value)};" for kind, name, value in flat_tokens(content)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_scss(content: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    lines = [f"// {_header(meta)}"]
    lines += [f"${name}: {css_value(kind, value)} !default;" for kind, name, value in flat_tokens(content)]
    return "\n".join(lines) + "\n"


# --- Tailwind ------------------------------------------------------------------------------------


def tailwind_theme(content: Mapping[str, Any]) -> dict[str, Any]:
    typography = content.get("typography") or {}
    extend: dict[str, Any] = {}
    if content.get("colors"):
        extend["colors"] = {group: dict(shades) for group, shades in content["colors"].items()}
    if typography.get("families"):
        extend["fontFamily"] = {name: list(fonts) for name, fonts in typography["families"].items()}
    if typography.get("sizes"):
        extend["fontSize"] = dict(typography["sizes"])
    if typography.get("weights"):
        extend["fontWeight"] = {name: str(value) for name, value in typography["weights"].items()}
    if typography.get("line_heights"):
        extend["lineHeight"] = {name: str(value) for name, value in typography["line_heights"].items()}
    if content.get("spacing"):
        extend["spacing"] = dict(content["spacing"])
    if content.get("radii"):
        extend["borderRadius"] = dict(content["radii"])
    if content.get("shadows"):
        extend["boxShadow"] = {name: _shadow(layers) for name, layers in content["shadows"].items()}
    return {"theme": {"extend": extend}}


def to_tailwind(content: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    config = json.dumps(tailwind_theme(content), indent=2)
    return f"// {_header(meta)}\n/** @type {{import('tailwindcss').Config}} */\nmodule.exports = {config};\n"


# --- Tokens Studio (figma-tokens) ---------------------------------------------------------------------


def to_figma_tokens(content: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    typography = content.get("typography") or {}
    tokens: dict[str, Any] = {}

    def section(name: str, kind: str, values: Mapping[str, Any], convert: Any = str) -> None:
        if values:
            tokens[name] = {key: {"value": convert(value), "type": kind} for key, value in values.items()}

    if content.get("colors"):
        tokens["color"] = {
            group: {shade: {"value": value, "type": "color"} for shade, value in shades.items()}
            for group, shades in content["colors"].items()
        }
    section("fontFamilies", "fontFamilies", typography.get("families") or {}, ", ".join)
    section("fontSizes", "fontSizes", typography.get("sizes") or {})
    section("fontWeights", "fontWeights", typography.get("weights") or {})
    section("lineHeights", "lineHeights", typography.get("line_heights") or {})
    section("spacing", "spacing", content.get("spacing") or {})
    section("borderRadius", "borderRadius", content.get("radii") or {})
    if content.get("shadows"):
        tokens["boxShadow"] = {
            name: {
                "value": [
                    {
                        "x": layer["x"],
                        "y": layer["y"],
                        "blur": layer["blur"],
                        "spread": layer["spread"],
                        "color": layer["color"],
                        "type": "dropShadow",
                    }
                    for layer in layers
                ],
                "type": "boxShadow",
            }
            for name, layers in content["shadows"].items()
        }
    document = {
        "global": tokens,
        "$themes": [],
        "$metadata": {
            "tokenSetOrder": ["global"],
            "pixforge": {"id": meta["id"], "version": meta["version"]},
        },
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

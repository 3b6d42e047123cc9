"""Helpers for the design-system tests: an independent WCAG contrast (stdlib, the W3C formula), synthetic
images of known colour blocks, uploads over HTTP, and readers that parse each export back."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from PIL import Image, ImageDraw

from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.main import create_app

PALETTES = "/api/v1/palettes"
SYSTEMS = "/api/v1/design-systems"
GENERATE = "/api/v1/design-systems/generate"
SHOWCASE = "/api/v1/design-systems/public"
USAGE = "/api/v1/users/me/usage"
UPLOADS = "/api/v1/uploads"
USER_CREDITS = "/api/v1/users/credits"


@asynccontextmanager
async def app_client(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app built with `settings` on the test's database (for one setting changed); its
    LLM client, if one was built, is closed at the end."""
    container = Container.build(settings, database)
    app = create_app(settings, database, container)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        model = getattr(app.state, "text_model", None)
        if model is not None:
            await model.aclose()
        await container.aclose()


# --- WCAG 2.1, written from the definition (not through the app's colour library) -------------------


def _linear(channel: int) -> float:
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(hex_color: str) -> float:
    r, g, b = (int(hex_color[index : index + 2], 16) for index in (1, 3, 5))
    return 0.2126 * _linear(r) + 0.7152 * _linear(g) + 0.0722 * _linear(b)


def wcag_ratio(foreground: str, background: str) -> float:
    lighter, darker = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


# --- images --------------------------------------------------------------------------------------


def blocks_png(blocks: list[tuple[str, int]], height: int = 300, transparent_width: int = 0) -> bytes:
    """Vertical colour blocks side by side, `width` pixels each (so each colour's area is known), then
    an optional fully transparent block."""
    width = sum(block_width for _, block_width in blocks) + transparent_width
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    left = 0
    for hex_color, block_width in blocks:
        draw.rectangle([left, 0, left + block_width - 1, height - 1], fill=hex_color)
        left += block_width
    output = io.BytesIO()
    (image if transparent_width else image.convert("RGB")).save(output, "PNG")
    return output.getvalue()


async def upload(client: httpx.AsyncClient, headers: dict[str, str], data: bytes) -> str:
    response = await client.post(UPLOADS, headers=headers, files={"file": ("image.png", data, "image/png")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def balance(client: httpx.AsyncClient, headers: dict[str, str]) -> float:
    response = await client.get(USER_CREDITS, headers=headers)
    assert response.status_code == 200, response.text
    return float(response.json()["credits"])


# --- a stored system, flattened the way the CSS/SCSS exports name it ------------------------------------


def flat_names(system: dict[str, Any]) -> dict[str, str]:
    """{name: value as a stylesheet writes it} for a system as GET /design-systems/{id} returns it."""
    flat: dict[str, str] = {}
    for group, shades in system["colors"].items():
        for shade, value in shades.items():
            flat[f"color-{group}" if shade == "DEFAULT" else f"color-{group}-{shade}"] = value
    typography = system["typography"]
    generic = {"serif", "sans-serif", "monospace", "system-ui", "ui-serif", "ui-sans-serif", "ui-monospace"}
    for name, fonts in typography["families"].items():
        flat[f"font-{name}"] = ", ".join(font if font in generic else f'"{font}"' for font in fonts)
    for name, value in typography["sizes"].items():
        flat[f"text-{name}"] = value
    for name, value in typography["weights"].items():
        flat[f"font-weight-{name}"] = str(value)
    for name, value in typography["line_heights"].items():
        flat[f"leading-{name}"] = str(value)
    for name, value in system["spacing"].items():
        flat[f"spacing-{name}"] = value
    for name, value in system["radii"].items():
        flat[f"radius-{name}"] = value
    for name, layers in system["shadows"].items():
        flat[f"shadow-{name}"] = ", ".join(
            f"{layer['x']} {layer['y']} {layer['blur']} {layer['spread']} {layer['color']}"
            for layer in layers
        )
    return flat


_CSS_PROPERTY = re.compile(r"^\s*--([a-z0-9-]+):\s*(.+?);\s*$")
_SCSS_VARIABLE = re.compile(r"^\$([a-z0-9-]+):\s*(.+?)\s+!default;\s*$")


def parse_css(text: str) -> dict[str, str]:
    """The custom properties of the export's one `:root` block."""
    assert text.count(":root {") == 1
    body = text.split(":root {", 1)[1].rsplit("}", 1)[0]
    properties = {}
    for line in body.strip().splitlines():
        match = _CSS_PROPERTY.match(line)
        assert match is not None, line
        assert match.group(1) not in properties, f"--{match.group(1)} twice"
        properties[match.group(1)] = match.group(2)
    return properties


def parse_scss(text: str) -> dict[str, str]:
    variables = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("//"):
            continue
        match = _SCSS_VARIABLE.match(line)
        assert match is not None, line
        variables[match.group(1)] = match.group(2)
    return variables


def parse_tailwind_as_json(text: str) -> dict[str, Any]:
    """`module.exports = {...};` whose object is JSON: read as data without running JavaScript."""
    match = re.search(r"^module\.exports = (\{.*\});\s*$", text, re.S | re.M)
    assert match is not None, text[:200]
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def hex_of_dtcg(value: dict[str, Any]) -> str:
    """A DTCG colour object back to hex, from its sRGB components (and alpha), checked against `hex`."""
    assert value["colorSpace"] == "srgb"
    channels = "".join(f"{round(component * 255):02x}" for component in value["components"])
    assert f"#{channels}" == value["hex"]
    alpha = value.get("alpha", 1)
    return f"#{channels}" if alpha == 1 else f"#{channels}{round(alpha * 255):02x}"


def dimension_of_dtcg(value: dict[str, Any]) -> str:
    number = value["value"]
    text = str(int(number)) if float(number).is_integer() else str(number)
    return f"{text}{value['unit']}"

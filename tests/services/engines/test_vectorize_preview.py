"""Preview pricing cannot be bypassed: whatever options a client sends, `mode=preview` (0.2 credit) is a
coarser trace of a smaller image than `mode=full` (1 credit) with the same options, never the same SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.services.engines.vectorize import PREVIEW_MAX_SIDE
from tests.conftest import make_settings
from tests.support.images import logo_like, photo_like

# Nothing here depends on the database: one run, on SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

BONUS = 10.0
VECTORIZE = "/api/v1/images/vectorize"

# Option sets a client may send: none, the full mode's defaults spelled out, the richest the API takes,
# already coarse ones (within the preview's own limits), and the other colour and curve modes.
OPTION_SETS = {
    "defaults": {},
    "full-defaults": {"color_precision": 6, "filter_speckle": 4, "layer_difference": 16},
    "richest": {"color_precision": 8, "filter_speckle": 0, "layer_difference": 1},
    "coarse": {"color_precision": 2, "filter_speckle": 20, "layer_difference": 64},
    "binary": {"colormode": "binary", "filter_speckle": 0},
    "polygon": {"mode": "polygon", "color_precision": 8},
}
# Inputs smaller and larger than the preview's side: photos (many shades) and flat logos, on which
# coarser settings alone change little.
IMAGES = {
    "photo-400x300": lambda: photo_like(400, 300),
    "photo-600x400": lambda: photo_like(600, 400),
    "logo-256": lambda: logo_like(256),
    "logo-700": lambda: logo_like(700),
}
CASES = [
    pytest.param(image, options, id=f"{image}-{name}")
    for image in IMAGES
    for name, options in OPTION_SETS.items()
    # A full trace of a photo at the richest options is an SVG of several MB: the logos show that case.
    if not (image.startswith("photo") and name == "richest")
]


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        public_base_url="http://testserver",
        signup_bonus_credits=100,
    )


def shapes(svg: str) -> int:
    root = ET.fromstring(svg)
    return sum(1 for element in root.iter() if element.tag.rsplit("}", 1)[-1] == "path")


def longest_side(svg: str) -> float:
    root = ET.fromstring(svg)
    return max(float(root.attrib["width"]), float(root.attrib["height"]))


async def vectorize(
    client: httpx.AsyncClient, auth: dict[str, str], upload_id: str, mode: str, options: dict[str, Any]
) -> tuple[str, float]:
    response = await client.post(
        VECTORIZE, headers=auth, json={"upload_id": upload_id, "mode": mode, "options": options}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["svg"], float(body["credits"])


@pytest.mark.parametrize(("image", "options"), CASES)
async def test_a_preview_is_never_the_full_product_whatever_the_options(
    client: httpx.AsyncClient, auth: dict[str, str], image: str, options: dict[str, Any]
) -> None:
    uploaded = await client.post("/api/v1/uploads", headers=auth, files={"file": ("a.png", IMAGES[image]())})
    assert uploaded.status_code == 201, uploaded.text
    upload_id = uploaded.json()["id"]

    preview, after_preview = await vectorize(client, auth, upload_id, "preview", options)
    full, after_full = await vectorize(client, auth, upload_id, "full", options)

    assert after_preview == pytest.approx(100 - 0.2)
    assert after_full == pytest.approx(100 - 0.2 - 1)
    assert preview != full
    assert shapes(preview) <= shapes(full)
    # At most half the full trace's resolution, and never more than the preview's side.
    assert longest_side(preview) <= min(PREVIEW_MAX_SIDE, longest_side(full) / 2)


async def test_a_preview_with_the_full_modes_options_is_coarser_than_the_full_trace(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """The report's case: a photo, the full mode's settings sent with `mode=preview`."""
    uploaded = await client.post(
        "/api/v1/uploads", headers=auth, files={"file": ("a.png", photo_like(600, 400))}
    )
    upload_id = uploaded.json()["id"]
    options = {"color_precision": 6, "filter_speckle": 4, "layer_difference": 16}
    preview, _ = await vectorize(client, auth, upload_id, "preview", options)
    full, _ = await vectorize(client, auth, upload_id, "full", options)
    assert shapes(preview) * 10 < shapes(full)
    assert len(preview) * 10 < len(full)

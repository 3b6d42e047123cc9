"""GET /design-systems/{id}/export: every format parsed back equals the stored system (the Tailwind config
read as data, and run by node when it is installed); pro-only formats; whose systems can be exported."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database
from tests.conftest import make_settings
from tests.factories import bearer, make_user
from tests.support.design import (
    GENERATE,
    SYSTEMS,
    app_client,
    dimension_of_dtcg,
    flat_names,
    hex_of_dtcg,
    parse_css,
    parse_scss,
    parse_tailwind_as_json,
)
from tests.support.http import assert_error

# Nothing here depends on the database: one run, on SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

HAND_MADE: dict[str, Any] = {
    "name": 'Quotes "and" */ </script> ${x}',
    "colors": {"brand": {"DEFAULT": "#0f766e", "50": "#f0fdfa", "foreground": "#ffffff"}},
    "typography": {
        "families": {"display": ["Fraunces", "ui-serif", "serif"], "code": ["JetBrains Mono", "monospace"]},
        "sizes": {"base": "1rem", "2xl": "1.563rem"},
        "weights": {"regular": 400, "bold": 700},
        "line_heights": {"tight": 1.2, "normal": 1.5},
    },
    "spacing": {"0": "0px", "4": "1rem", "gutter": "24px"},
    "radii": {"full": "9999px"},
    "shadows": {
        "inner": [{"x": "0px", "y": "-1px", "blur": "0px", "spread": "0px", "color": "#ffffff80"}],
        "md": [
            {"x": "0px", "y": "4px", "blur": "6px", "spread": "-1px", "color": "#0f172a1a"},
            {"x": "0px", "y": "2px", "blur": "4px", "spread": "-2px", "color": "#0f172a1a"},
        ],
    },
}


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture
async def pro_auth(session: AsyncSession, settings: Settings, container: Container) -> dict[str, str]:
    return bearer(container, await make_user(session, settings, plan="pro"))


@pytest.fixture(params=["generated", "hand-made", "colours-only"])
async def system(
    request: pytest.FixtureRequest, client: httpx.AsyncClient, pro_auth: dict[str, str]
) -> dict[str, Any]:
    """A stored system as GET returns it (made by the pro user)."""
    if request.param == "hand-made":
        response = await client.post(SYSTEMS, headers=pro_auth, json=HAND_MADE)
        assert response.status_code == 201, response.text
        made = response.json()
    else:
        tier = "full" if request.param == "generated" else "colors"
        response = await client.post(GENERATE, headers=pro_auth, json={"base_color": "#db2777", "tier": tier})
        assert response.status_code == 201, response.text
        made = response.json()["design_system"]
    stored: dict[str, Any] = (await client.get(f"{SYSTEMS}/{made['id']}", headers=pro_auth)).json()
    return stored


def content_of(system: dict[str, Any]) -> dict[str, Any]:
    return {name: system[name] for name in ("colors", "typography", "spacing", "radii", "shadows")}


async def export(
    client: httpx.AsyncClient, headers: dict[str, str], system_id: str, fmt: str
) -> httpx.Response:
    return await client.get(f"{SYSTEMS}/{system_id}/export", headers=headers, params={"format": fmt})


# --- each format, read back ---------------------------------------------------------------------------


async def test_design_tokens_json_reads_back_as_the_stored_system(
    client: httpx.AsyncClient, pro_auth: dict[str, str], system: dict[str, Any]
) -> None:
    response = await export(client, pro_auth, system["id"], "json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/design-tokens+json")
    assert response.headers["content-disposition"].endswith('.tokens.json"')
    document = response.json()
    assert document["$extensions"]["app.pixforge"] == {
        "id": system["id"],
        "name": system["name"],
        "version": 1,
    }
    typography: dict[str, Any] = {"families": {}, "sizes": {}, "weights": {}, "line_heights": {}}
    read: dict[str, Any] = {"colors": {}, "typography": typography, "spacing": {}, "radii": {}, "shadows": {}}
    for group, tokens in document.get("color", {}).items():
        if group.startswith("$"):
            continue
        read["colors"][group] = {
            "DEFAULT" if name == "$root" else name: hex_of_dtcg(token["$value"])
            for name, token in tokens.items()
        }
    readers = {
        "font": (typography["families"], "fontFamily", list),
        "font-size": (typography["sizes"], "dimension", dimension_of_dtcg),
        "font-weight": (typography["weights"], "fontWeight", int),
        "line-height": (typography["line_heights"], "number", float),
        "spacing": (read["spacing"], "dimension", dimension_of_dtcg),
        "radius": (read["radii"], "dimension", dimension_of_dtcg),
    }
    for group, (target, kind, convert) in readers.items():
        if group in document:
            assert document[group]["$type"] == kind
            target.update(
                {name: convert(token["$value"]) for name, token in document[group].items() if name != "$type"}
            )
    for name, token in document.get("shadow", {}).items():
        if name == "$type":
            continue
        read["shadows"][name] = [
            {
                "x": dimension_of_dtcg(layer["offsetX"]),
                "y": dimension_of_dtcg(layer["offsetY"]),
                "blur": dimension_of_dtcg(layer["blur"]),
                "spread": dimension_of_dtcg(layer["spread"]),
                "color": hex_of_dtcg(layer["color"]),
            }
            for layer in token["$value"]
        ]
    assert read == content_of(system)
    # Every token has a type (its own or its group's) and names follow the format's rules.
    for group_name, group in document.items():
        if group_name.startswith("$"):
            continue
        assert "$type" in group
        for name in group:
            assert not any(ch in name for ch in "{}.")


async def test_css_custom_properties_read_back_as_the_stored_system(
    client: httpx.AsyncClient, pro_auth: dict[str, str], system: dict[str, Any]
) -> None:
    response = await export(client, pro_auth, system["id"], "css")
    assert response.headers["content-type"].startswith("text/css")
    assert parse_css(response.text) == flat_names(system)
    assert system["name"] not in response.text


async def test_scss_variables_read_back_as_the_stored_system(
    client: httpx.AsyncClient, pro_auth: dict[str, str], system: dict[str, Any]
) -> None:
    response = await export(client, pro_auth, system["id"], "scss")
    assert response.status_code == 200, response.text
    assert parse_scss(response.text) == flat_names(system)


def theme_of(config: dict[str, Any]) -> dict[str, Any]:
    """The stored content a Tailwind config describes."""
    extend = config["theme"]["extend"]
    stored: dict[str, Any] = {
        "colors": extend.get("colors", {}),
        "typography": {
            "families": extend.get("fontFamily", {}),
            "sizes": extend.get("fontSize", {}),
            "weights": {name: int(value) for name, value in extend.get("fontWeight", {}).items()},
            "line_heights": {name: float(value) for name, value in extend.get("lineHeight", {}).items()},
        },
        "spacing": extend.get("spacing", {}),
        "radii": extend.get("borderRadius", {}),
        "shadows": {},
    }
    for name, value in extend.get("boxShadow", {}).items():
        layers = []
        for layer in value.split(", "):
            x, y, blur, spread, color = layer.split(" ")
            layers.append({"x": x, "y": y, "blur": blur, "spread": spread, "color": color})
        stored["shadows"][name] = layers
    return stored


async def test_the_tailwind_config_evaluated_as_data_is_the_stored_system(
    client: httpx.AsyncClient, pro_auth: dict[str, str], system: dict[str, Any], tmp_path: Path
) -> None:
    response = await export(client, pro_auth, system["id"], "tailwind")
    assert response.headers["content-disposition"] == 'attachment; filename="tailwind.config.js"'
    config = parse_tailwind_as_json(response.text)
    assert theme_of(config) == content_of(system)
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the config was read as JSON only")
    path = tmp_path / "tailwind.config.js"
    path.write_text(response.text)
    script = "process.stdout.write(JSON.stringify(require(process.argv[1])))"
    process = await asyncio.create_subprocess_exec(
        node, "-e", script, str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert json.loads(stdout) == config


async def test_figma_tokens_read_back_for_a_pro_user(
    client: httpx.AsyncClient, pro_auth: dict[str, str], system: dict[str, Any]
) -> None:
    response = await export(client, pro_auth, system["id"], "figma-tokens")
    assert response.status_code == 200, response.text
    tokens = response.json()["global"]
    assert response.json()["$metadata"]["tokenSetOrder"] == ["global"]

    def values(section: str, kind: str) -> dict[str, Any]:
        assert all(token["type"] == kind for token in tokens.get(section, {}).values())
        return {name: token["value"] for name, token in tokens.get(section, {}).items()}

    read = {
        "colors": {
            group: {shade: token["value"] for shade, token in shades.items()}
            for group, shades in tokens.get("color", {}).items()
        },
        "typography": {
            "families": {
                name: value.split(", ") for name, value in values("fontFamilies", "fontFamilies").items()
            },
            "sizes": values("fontSizes", "fontSizes"),
            "weights": {name: int(value) for name, value in values("fontWeights", "fontWeights").items()},
            "line_heights": {
                name: float(value) for name, value in values("lineHeights", "lineHeights").items()
            },
        },
        "spacing": values("spacing", "spacing"),
        "radii": values("borderRadius", "borderRadius"),
        "shadows": {
            name: [{key: layer[key] for key in ("x", "y", "blur", "spread", "color")} for layer in layers]
            for name, layers in values("boxShadow", "boxShadow").items()
        },
    }
    assert read == content_of(system)


# --- who may export what --------------------------------------------------------------------------------


async def test_a_pro_only_format_is_403_plan_required_for_a_free_user(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.post(GENERATE, headers=auth, json={"base_color": "#db2777"})
    system_id = response.json()["design_system"]["id"]
    body = assert_error(await export(client, auth, system_id, "figma-tokens"), 403, "plan_required")
    assert body["format"] == "figma-tokens"
    for fmt in ("json", "css", "tailwind", "scss"):
        assert (await export(client, auth, system_id, fmt)).status_code == 200


async def test_which_formats_are_pro_only_is_a_setting(
    settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    changed = settings.model_copy(update={"design_export_pro_formats": ["scss"]})
    async with app_client(changed, database) as client:
        response = await client.post(GENERATE, headers=auth, json={"base_color": "#db2777", "tier": "colors"})
        system_id = response.json()["design_system"]["id"]
        assert_error(await export(client, auth, system_id, "scss"), 403, "plan_required")
        assert (await export(client, auth, system_id, "figma-tokens")).status_code == 200


async def test_a_shared_system_can_be_exported_by_others_a_private_one_cannot(
    client: httpx.AsyncClient, auth: dict[str, str], pro_auth: dict[str, str]
) -> None:
    made = (await client.post(SYSTEMS, headers=pro_auth, json=HAND_MADE)).json()
    assert_error(await export(client, auth, made["id"], "css"), 404, "not_found")
    await client.post(f"{SYSTEMS}/{made['id']}/share", headers=pro_auth)
    assert parse_css((await export(client, auth, made["id"], "css")).text) == flat_names(made)


@pytest.mark.parametrize("params", [{"format": "pdf"}, {"format": ""}])
async def test_an_unknown_format_is_422(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, str]
) -> None:
    made = (await client.post(SYSTEMS, headers=auth, json=HAND_MADE)).json()
    response = await client.get(f"{SYSTEMS}/{made['id']}/export", headers=auth, params=params)
    assert_error(response, 422, "validation_error")

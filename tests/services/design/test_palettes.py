"""POST /palettes from a colour and from an image, over HTTP: WCAG figures, accessible pairs, dominant
colours by area, charging and usage, and what bad input gets. (Prompts: tests/integrations/test_llm.py.)"""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest
from coloraide import Color
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database
from app.models import CreditLedgerEntry, UsageRecord, User
from app.schemas.design import PaletteOut
from app.services.design import colors
from tests.conftest import make_settings
from tests.factories import bearer, make_user
from tests.support.design import PALETTES, USAGE, app_client, balance, blocks_png, upload, wcag_ratio
from tests.support.http import assert_error, sample

BONUS = 10.0


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"))


async def usage_rows(session: AsyncSession, user: User) -> list[UsageRecord]:
    return list(await session.scalars(select(UsageRecord).where(UsageRecord.user_id == user.id)))


async def ledger_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(CreditLedgerEntry)) or 0)


# --- colour maths, on the published vectors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("foreground", "ratio"),
    [
        ("#000000", 21.0),
        ("#595959", 7.0047),
        ("#767676", 4.5422),
        ("#777777", 4.4781),
        ("#999999", 2.8490),
        ("#0000ff", 8.5925),
        ("#ff0000", 3.9985),
    ],
)
def test_contrast_on_white_matches_the_published_ratios(foreground: str, ratio: float) -> None:
    assert wcag_ratio(foreground, "#ffffff") == pytest.approx(ratio, abs=0.0005)
    assert colors.contrast(foreground, "#ffffff") == pytest.approx(ratio, abs=0.005)


def test_777777_on_white_fails_aa_and_black_on_white_is_21() -> None:
    assert round(colors.contrast("#777777", "#ffffff"), 2) == 4.48
    assert colors.contrast("#777777", "#ffffff") < colors.AA
    assert colors.contrast("#000000", "#ffffff") == pytest.approx(21.0)


@pytest.mark.parametrize(
    ("foreground", "background"),
    [("#777777", "#ffffff"), ("#3b82f6", "#0f172a"), ("#fde047", "#fde047"), ("#ff0000", "#000000")],
)
def test_contrast_from_the_kept_luminances_is_coloraides_own_ratio(foreground: str, background: str) -> None:
    expected = Color(foreground).contrast(background, method="wcag21")
    assert colors.contrast(foreground, background) == pytest.approx(expected, rel=1e-12)
    assert colors.contrast(background, foreground) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("background", ["#ffffff", "#f4f4f5", "#3b82f6", "#fde047", "#1e293b", "#000000"])
def test_a_too_faint_foreground_is_moved_to_aa_keeping_its_hue(background: str) -> None:
    faint = "#8ab4f8" if wcag_ratio("#8ab4f8", background) < 4.5 else "#2a3c5a"
    fixed = colors.ensure_contrast(faint, background)
    assert wcag_ratio(fixed, background) >= 4.5
    if colors.oklch(fixed).chroma > 0.03:
        assert abs(colors.oklch(fixed).hue - colors.oklch(faint).hue) < 12


# --- from a colour ------------------------------------------------------------------------------------


async def test_a_palette_from_a_colour_has_every_part_and_only_accessible_pairs(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.post(PALETTES, headers=auth, json={"base_color": "#3B82F6"})
    assert response.status_code == 200, response.text
    palette = response.json()
    assert palette["source"] == "color"
    assert palette["mode"] == "complementary"
    assert palette["primary"]["hex"] == "#3b82f6"
    assert list(palette["neutral"]) == [
        "50",
        "100",
        "200",
        "300",
        "400",
        "500",
        "600",
        "700",
        "800",
        "900",
        "950",
    ]
    lightness = [palette["neutral"][shade]["oklch"]["l"] for shade in palette["neutral"]]
    assert lightness == sorted(lightness, reverse=True)
    for role in ("primary", "secondary", "accent", "success", "warning", "danger", "info"):
        color = palette[role]
        assert color["on_white"]["ratio"] == pytest.approx(wcag_ratio(color["hex"], "#ffffff"), abs=0.01)
        assert color["on_black"]["ratio"] == pytest.approx(wcag_ratio(color["hex"], "#000000"), abs=0.01)
        assert color["on_white"]["aa"] == (wcag_ratio(color["hex"], "#ffffff") >= 4.5)
        assert wcag_ratio(color["text_color"], color["hex"]) >= 4.5
    assert len(palette["pairs"]) >= 10
    for pair in palette["pairs"]:
        assert wcag_ratio(pair["foreground"], pair["background"]) >= 4.5, pair
    assert palette["credits_charged"] == 1.0
    assert palette["credits"] == BONUS - 1
    assert await balance(client, auth) == BONUS - 1
    # Rendered in two parts (the palette where it was computed, the charge here): one documented shape.
    assert response.headers["content-type"] == "application/json"
    assert sorted(palette) == sorted(PaletteOut.model_fields)
    assert PaletteOut.model_validate(palette).model_dump(mode="json") == palette


async def test_the_colour_science_s_cpu_time_is_in_the_metrics(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """What an operator sizes COMPUTE_PROCESSES by (and bench.hot_path subtracts): tasks and CPU seconds."""
    for base in ("#3B82F6", "#e11d48"):
        assert (await client.post(PALETTES, headers=auth, json={"base_color": base})).status_code == 200
    text = (await client.get("/metrics")).text
    task = "app.services.design.palettes.rendered_from_color"
    assert sample(text, "pixforge_compute_tasks_total", task=task) == 2
    assert (sample(text, "pixforge_compute_cpu_seconds_total", task=task) or 0) > 0


@pytest.mark.parametrize(
    "mode", ["complementary", "analogous", "triadic", "split_complementary", "square", "monochromatic"]
)
async def test_every_harmony_gives_three_distinct_roles_with_accessible_pairs(
    client: httpx.AsyncClient, auth: dict[str, str], mode: str
) -> None:
    response = await client.post(PALETTES, headers=auth, json={"base_color": "#e11d48", "mode": mode})
    assert response.status_code == 200, response.text
    palette = response.json()
    assert palette["mode"] == mode
    roles = {palette[role]["hex"] for role in ("primary", "secondary", "accent")}
    assert len(roles) == 3
    assert all(wcag_ratio(pair["foreground"], pair["background"]) >= 4.5 for pair in palette["pairs"])


async def test_a_pale_brand_colour_gets_a_repaired_link_colour(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """#fde047 on white is 1.3:1: the recommended link colour is a darker yellow that passes AA."""
    response = await client.post(PALETTES, headers=auth, json={"base_color": "#fde047"})
    pairs = {pair["name"]: pair for pair in response.json()["pairs"]}
    link = pairs["link_on_white"]
    assert link["repaired"] is True
    assert link["foreground"] != "#fde047"
    assert wcag_ratio(link["foreground"], "#ffffff") >= 4.5
    assert any("link_on_white" in note for note in response.json()["repairs"])


# --- from an image ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["median_cut", "octree", "kmeans"])
async def test_a_palette_from_three_colour_blocks_returns_them_by_area(
    client: httpx.AsyncClient, auth: dict[str, str], mode: str
) -> None:
    blocks = [("#10b981", 200), ("#1d4ed8", 500), ("#f59e0b", 300)]  # 20%, 50%, 30% of the area
    upload_id = await upload(client, auth, blocks_png(blocks))
    response = await client.post(PALETTES, headers=auth, json={"upload_id": upload_id, "mode": mode})
    assert response.status_code == 200, response.text
    palette = response.json()
    assert palette["source"] == "image"
    # The image is sampled (nearest neighbour) before it is quantized: shares are close, colours exact.
    assert [(color["hex"], color["share"]) for color in palette["dominant"]] == [
        ("#1d4ed8", pytest.approx(0.5, abs=0.005)),
        ("#f59e0b", pytest.approx(0.3, abs=0.005)),
        ("#10b981", pytest.approx(0.2, abs=0.005)),
    ]
    assert [palette[role]["hex"] for role in ("primary", "secondary", "accent")] == [
        "#1d4ed8",
        "#f59e0b",
        "#10b981",
    ]
    assert all(wcag_ratio(pair["foreground"], pair["background"]) >= 4.5 for pair in palette["pairs"])


async def test_transparent_pixels_and_a_white_background_do_not_make_the_brand_colour(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """A logo: mostly white, one brand colour, and a transparent margin that must not count at all."""
    data = blocks_png([("#ffffff", 600), ("#7c3aed", 300)], transparent_width=400)
    response = await client.post(PALETTES, headers=auth, json={"upload_id": await upload(client, auth, data)})
    palette = response.json()
    assert [(color["hex"], color["share"]) for color in palette["dominant"]] == [
        ("#ffffff", pytest.approx(0.6667, abs=0.005)),
        ("#7c3aed", pytest.approx(0.3333, abs=0.005)),
    ]
    assert palette["primary"]["hex"] == "#7c3aed"


async def test_another_users_upload_is_404_and_costs_nothing(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    container: Container,
) -> None:
    other = await make_user(session, settings)
    upload_id = await upload(client, bearer(container, other), blocks_png([("#ff0000", 10)]))
    response = await client.post(PALETTES, headers=auth, json={"upload_id": upload_id})
    assert_error(response, 404, "not_found")
    assert await balance(client, auth) == BONUS


# --- money and records --------------------------------------------------------------------------------


async def test_a_palette_is_charged_once_with_its_usage_record_in_the_same_spend(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, user: User
) -> None:
    response = await client.post(PALETTES, headers=auth, json={"base_color": "#123456"})
    palette_id = uuid.UUID(response.json()["id"])
    [record] = await usage_rows(session, user)
    assert (record.action, record.credits, record.object_id, record.success) == (
        "palette",
        1000,
        palette_id,
        True,
    )
    spent = await session.scalar(
        select(func.sum(CreditLedgerEntry.amount)).where(
            CreditLedgerEntry.reference == f"palette:{palette_id}"
        )
    )
    assert spent == -1000
    summary = (await client.get(USAGE, headers=auth)).json()
    assert summary["totals"] == [{"action": "palette", "count": 1, "failed": 0, "credits": 1.0}]


async def test_without_credits_it_is_402_and_nothing_is_written(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    broke = await make_user(session, settings.model_copy(update={"signup_bonus_credits": Decimal(0)}))
    headers = bearer(container, broke)
    upload_id = await upload(client, headers, blocks_png([("#ff0000", 10)]))
    before = await ledger_count(session)
    for body in ({"base_color": "#3b82f6"}, {"upload_id": upload_id}):
        response = await client.post(PALETTES, headers=headers, json=body)
        body_out = assert_error(response, 402, "insufficient_credits")
        assert body_out["required"] == 1.0
        assert body_out["available"] == 0.0
    assert await usage_rows(session, broke) == []
    assert await ledger_count(session) == before


async def test_a_price_set_to_zero_is_free_but_still_recorded(
    settings: Settings, database: Database, session: AsyncSession, user: User, auth: dict[str, str]
) -> None:
    async with app_client(
        settings.model_copy(update={"palette_cost_credits": Decimal(0)}), database
    ) as client:
        response = await client.post(PALETTES, headers=auth, json={"base_color": "#3b82f6"})
        assert response.status_code == 200, response.text
        assert response.json()["credits_charged"] == 0.0
        assert await balance(client, auth) == BONUS
    [record] = await usage_rows(session, user)
    assert record.credits == 0


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 422, "validation_error"),
        ({"base_color": "#3b82f6", "prompt": "a calm bank"}, 422, "validation_error"),
        ({"base_color": "blue"}, 422, "validation_error"),
        ({"base_color": "#12345g"}, 422, "validation_error"),
        ({"base_color": "#3b82f6", "mode": "kmeans"}, 422, "validation_error"),
        ({"upload_id": str(uuid.uuid4()), "mode": "triadic"}, 422, "validation_error"),
        ({"base_color": "#3b82f6", "mode": "rainbow"}, 422, "validation_error"),
        ({"base_color": "#3b82f6", "extra": 1}, 422, "validation_error"),
        ({"upload_id": "not-a-uuid"}, 422, "validation_error"),
        ({"upload_id": str(uuid.uuid4())}, 404, "not_found"),
        ({"prompt": "x" * 1001}, 422, "validation_error"),
        ({"prompt": "a calm bank\u0000"}, 422, "validation_error"),
    ],
)
async def test_bad_input_gets_its_error_and_changes_nothing(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    session: AsyncSession,
    user: User,
    body: dict[str, object],
    status: int,
    error: str,
) -> None:
    response = await client.post(PALETTES, headers=auth, json=body)
    assert_error(response, status, error)
    assert await balance(client, auth) == BONUS
    assert await usage_rows(session, user) == []


async def test_malformed_json_is_400_and_no_token_is_401(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.post(PALETTES, headers={**auth, "content-type": "application/json"}, content=b"{")
    assert_error(response, 400, "bad_request")
    assert_error(await client.post(PALETTES, json={"base_color": "#3b82f6"}), 401, "unauthenticated")

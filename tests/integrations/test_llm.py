"""Palettes and design systems from a brief, through the official OpenAI and Anthropic SDKs talking to
fake servers that speak those APIs (tests/fakes/llm.py). The model's answer is untrusted: bad colours are
repaired or refused (502), and a failure costs nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.session import Database
from app.models import CreditLedgerEntry, DesignSystem, UsageRecord, User
from tests.conftest import make_settings
from tests.fakes.llm import FAKES, FakeLLM
from tests.support.design import GENERATE, PALETTES, USAGE, app_client, balance, wcag_ratio
from tests.support.http import assert_error

# Nothing here depends on the database: one run, on SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

BONUS = 10.0
GOOD_PALETTE = {
    "name": "Harbour Calm",
    "primary": "#1F6FEB",
    "secondary": "#0e9f6e",
    "accent": "#f59e0b",
    "rationale": "Trustworthy blues with a warm highlight.",
}
GOOD_SYSTEM = {
    "name": "Harbour",
    "description": "Calm, trustworthy, modern.",
    "primary": "#1f6feb",
    "secondary": "#0e9f6e",
    "accent": "#f59e0b",
    "font_pairing": "technical",
    "type_scale": "compact",
    "corner_style": "round",
    "tags": ["Calm", "fintech", "calm", "trust worthy"],
}


@pytest.fixture(scope="module", params=sorted(FAKES))
def fake_llm_server(request: pytest.FixtureRequest) -> Iterator[FakeLLM]:
    """One fake server per provider for the module."""
    with FAKES[request.param]() as fake:
        yield fake


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLM) -> FakeLLM:
    fake_llm_server.reset()
    fake_llm_server.default_answer = GOOD_PALETTE
    return fake_llm_server


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLM) -> Settings:
    return make_settings(
        database_url=database_url, data_dir=tmp_path_factory.mktemp("data"), **fake_llm.settings()
    )


@pytest.fixture
async def llm_client(settings: Settings, database: Database) -> httpx.AsyncClient:
    async with app_client(settings, database) as client:
        yield client


async def usage_rows(session: AsyncSession, user: User) -> list[UsageRecord]:
    return list(await session.scalars(select(UsageRecord).where(UsageRecord.user_id == user.id)))


async def ledger_rows(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(CreditLedgerEntry)) or 0)


async def test_a_palette_from_a_brief_uses_the_models_colours(
    llm_client: httpx.AsyncClient, auth: dict[str, str], fake_llm: FakeLLM, settings: Settings
) -> None:
    response = await llm_client.post(PALETTES, headers=auth, json={"prompt": "A calm harbour-side bank"})
    assert response.status_code == 200, response.text
    palette = response.json()
    assert palette["source"] == "prompt"
    assert palette["name"] == "Harbour Calm"
    assert [palette[role]["hex"] for role in ("primary", "secondary", "accent")] == [
        "#1f6feb",
        "#0e9f6e",
        "#f59e0b",
    ]
    assert all(wcag_ratio(pair["foreground"], pair["background"]) >= 4.5 for pair in palette["pairs"])
    assert palette["credits"] == BONUS - 1
    # What the provider was sent: the model of the settings, the brief, a bounded answer, a schema.
    [sent] = fake_llm.requests
    model = settings.llm_openai_model if fake_llm.provider == "openai" else settings.llm_anthropic_model
    assert sent["model"] == model
    assert "A calm harbour-side bank" in str(sent["messages"])
    tokens = sent.get("max_completion_tokens") or sent.get("max_tokens")
    assert 0 < tokens <= settings.llm_max_output_tokens


@pytest.mark.parametrize(
    ("answer", "repaired"),
    [
        ({**GOOD_PALETTE, "secondary": "not a colour", "accent": 42}, {"secondary", "accent"}),
        ({**GOOD_PALETTE, "primary": "rgb(31 111 235)", "secondary": "teal"}, {"primary", "secondary"}),
        ({**GOOD_PALETTE, "primary": "#ffffee", "name": "x" * 500}, set()),
    ],
)
async def test_bad_colours_from_the_model_are_repaired(
    llm_client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_llm: FakeLLM,
    answer: dict[str, object],
    repaired: set[str],
) -> None:
    fake_llm.answer_next(answer)
    response = await llm_client.post(PALETTES, headers=auth, json={"prompt": "A calm bank"})
    assert response.status_code == 200, response.text
    palette = response.json()
    for role in ("primary", "secondary", "accent"):
        assert palette[role]["hex"].startswith("#")
        assert len(palette[role]["hex"]) == 7
    assert {note.split(":")[0] for note in palette["repairs"]} >= repaired
    # A near-white primary still gives only AA pairs: its link colour is darkened.
    assert all(wcag_ratio(pair["foreground"], pair["background"]) >= 4.5 for pair in palette["pairs"])
    assert palette["name"] is None or len(palette["name"]) <= 81
    assert palette["credits"] == BONUS - 1


@pytest.mark.parametrize(
    ("misbehave", "error", "reason"),
    [
        (
            lambda fake: fake.answer_next({**GOOD_PALETTE, "primary": "bluish"}),
            "invalid_provider_output",
            None,
        ),
        (lambda fake: fake.answer_next(["#123456"]), "invalid_provider_output", None),
        (lambda fake: fake.truncate_next(), "invalid_provider_output", None),
        (lambda fake: fake.refuse_next(), "invalid_provider_output", None),
        (lambda fake: fake.fail_next(500), "provider_error", "provider_error"),
        (lambda fake: fake.fail_next(429), "provider_error", "provider_rate_limited"),
        (lambda fake: fake.fail_next(401), "provider_error", "provider_error"),
    ],
)
async def test_an_unusable_answer_is_502_and_costs_nothing(
    llm_client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_llm: FakeLLM,
    session: AsyncSession,
    user: User,
    misbehave: object,
    error: str,
    reason: str | None,
) -> None:
    assert callable(misbehave)
    misbehave(fake_llm)
    before = await ledger_rows(session)
    response = await llm_client.post(PALETTES, headers=auth, json={"prompt": "A calm bank"})
    body = assert_error(response, 502, error)
    assert body["credits_charged"] == 0
    if reason:
        assert body["reason"] == reason
    assert await balance(llm_client, auth) == BONUS
    assert await ledger_rows(session) == before
    # The failed attempt is in the usage history, uncharged.
    [record] = await usage_rows(session, user)
    assert (record.action, record.credits, record.success) == ("palette", 0, False)
    summary = (await llm_client.get(USAGE, headers=auth)).json()
    assert summary["totals"] == [{"action": "palette", "count": 0, "failed": 1, "credits": 0.0}]


async def test_a_model_that_answers_too_late_is_502_provider_timeout(
    settings: Settings, database: Database, auth: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.slow_next(1.5)
    async with app_client(settings.model_copy(update={"llm_timeout_seconds": 0.3}), database) as client:
        response = await client.post(PALETTES, headers=auth, json={"prompt": "A calm bank"})
        assert assert_error(response, 502, "provider_error")["reason"] == "provider_timeout"
        assert await balance(client, auth) == BONUS


@pytest.mark.parametrize("missing", ["openai_api_key", "anthropic_api_key"])
async def test_without_a_key_a_brief_is_503_and_local_modes_still_work(
    settings: Settings,
    database: Database,
    auth: dict[str, str],
    session: AsyncSession,
    user: User,
    missing: str,
) -> None:
    provider = missing.split("_")[0]
    unkeyed = settings.model_copy(update={"llm_provider": provider, missing: None})
    async with app_client(unkeyed, database) as client:
        for path, body in (
            (PALETTES, {"prompt": "A calm bank"}),
            (GENERATE, {"brand_description": "A calm bank"}),
        ):
            assert_error(await client.post(path, headers=auth, json=body), 503, "provider_not_configured")
        assert (await client.post(PALETTES, headers=auth, json={"base_color": "#3b82f6"})).status_code == 200
    assert len(await usage_rows(session, user)) == 1


async def test_a_design_system_from_a_brief_is_enriched_by_the_model(
    llm_client: httpx.AsyncClient, auth: dict[str, str], fake_llm: FakeLLM, session: AsyncSession, user: User
) -> None:
    fake_llm.answer_next(GOOD_SYSTEM)
    response = await llm_client.post(
        GENERATE, headers=auth, json={"brand_description": "A calm bank", "tier": "full"}
    )
    assert response.status_code == 201, response.text
    generated = response.json()
    system = generated["design_system"]
    assert system["name"] == "Harbour"
    assert system["description"] == "Calm, trustworthy, modern."
    assert system["source"] == "prompt"
    assert system["colors"]["primary"]["DEFAULT"] == "#1f6feb"
    assert system["typography"]["families"]["heading"][0] == "Space Grotesk"
    assert system["radii"]["md"] == "0.75rem"  # round corners
    assert system["tags"] == ["calm", "fintech", "trust-worthy"]
    assert system["is_public"] is False
    assert generated["credits_charged"] == 3.0
    assert await balance(llm_client, auth) == BONUS - 3
    [record] = await usage_rows(session, user)
    assert (record.action, record.credits, str(record.object_id)) == (
        "design_system_full",
        3000,
        system["id"],
    )
    assert [
        request.get("tool_choice", {}).get("name") or request["response_format"]["json_schema"]["name"]
        for request in fake_llm.requests
    ] == ["design_system"]


async def test_a_brief_with_a_fixed_colour_keeps_the_users_colour(
    llm_client: httpx.AsyncClient, auth: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer_next({**GOOD_SYSTEM, "primary": "#ff0000", "font_pairing": "comic", "corner_style": None})
    response = await llm_client.post(
        GENERATE,
        headers=auth,
        json={"brand_description": "A calm bank", "base_color": "#0f766e", "tier": "colors"},
    )
    assert response.status_code == 201, response.text
    generated = response.json()
    system = generated["design_system"]
    assert system["colors"]["primary"]["DEFAULT"] == "#0f766e"
    assert system["typography"] == {"families": {}, "sizes": {}, "weights": {}, "line_heights": {}}
    assert any(note.startswith("font_pairing") for note in generated["repairs"])
    assert "#0f766e" in str(fake_llm.requests[0])
    assert generated["credits_charged"] == 1.0


async def test_a_design_system_brief_without_a_usable_colour_is_502_and_nothing_is_saved(
    llm_client: httpx.AsyncClient, auth: dict[str, str], fake_llm: FakeLLM, session: AsyncSession, user: User
) -> None:
    fake_llm.answer_next({**GOOD_SYSTEM, "primary": "the colour of the sea"})
    response = await llm_client.post(GENERATE, headers=auth, json={"brand_description": "A calm bank"})
    assert_error(response, 502, "invalid_provider_output")
    assert (
        await session.scalar(
            select(func.count()).select_from(DesignSystem).where(DesignSystem.user_id == user.id)
        )
        == 0
    )
    assert await balance(llm_client, auth) == BONUS

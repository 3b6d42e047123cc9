"""Prompt enhancement through the official OpenAI and Anthropic SDKs talking to fake servers: the
model's answer is untrusted text (control characters removed, length capped), its failures are 502,
its absence 503, its slowness bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.config import Settings
from app.db.session import Database
from tests.conftest import make_settings
from tests.fakes.llm import FAKES, FakeLLM
from tests.support.design import app_client
from tests.support.http import assert_error

# Nothing here depends on the database: one run, on SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

ENHANCE = "/api/v1/prompts/enhance"
GOOD = {"prompt": "A portrait of tok123 as an astronaut on the moon, soft rim light, 85mm lens."}
OUTPUT_CAP = 300


@pytest.fixture(scope="module", params=sorted(FAKES))
def fake_llm_server(request: pytest.FixtureRequest) -> Iterator[FakeLLM]:
    with FAKES[request.param]() as fake:
        yield fake


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLM) -> FakeLLM:
    fake_llm_server.reset()
    fake_llm_server.default_answer = GOOD
    return fake_llm_server


@pytest.fixture
def settings(database_url: str, fake_llm: FakeLLM) -> Settings:
    return make_settings(
        database_url=database_url, prompt_enhance_output_max_chars=OUTPUT_CAP, **fake_llm.settings()
    )


@pytest.fixture
async def llm_client(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, database) as client:
        yield client


async def test_an_idea_is_enhanced_by_the_configured_model(
    llm_client: httpx.AsyncClient, auth: dict[str, str], fake_llm: FakeLLM, settings: Settings
) -> None:
    body = {"prompt": "  tok123 as an\nastronaut ", "style": "cinematic"}
    response = await llm_client.post(ENHANCE, headers=auth, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"original": "tok123 as an astronaut", "enhanced": GOOD["prompt"]}
    [sent] = fake_llm.requests
    model = settings.llm_openai_model if fake_llm.provider == "openai" else settings.llm_anthropic_model
    assert sent["model"] == model
    assert "tok123 as an astronaut" in str(sent["messages"])
    assert "cinematic" in str(sent["messages"])
    tokens = sent.get("max_completion_tokens") or sent.get("max_tokens")
    assert 0 < tokens <= settings.prompt_enhance_max_output_tokens


async def test_the_models_text_is_cleaned_and_capped(
    llm_client: httpx.AsyncClient, auth: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.answer_next({"prompt": "A\x00 cat\u200b in\r\n\tthe\x1b[31m rain\u202e. " + "word " * 500})
    response = await llm_client.post(ENHANCE, headers=auth, json={"prompt": "a cat"})
    assert response.status_code == 200, response.text
    enhanced = response.json()["enhanced"]
    assert enhanced.startswith("A cat in the[31m rain. word")
    assert len(enhanced) <= OUTPUT_CAP
    assert all(char.isprintable() for char in enhanced)


@pytest.mark.parametrize(
    ("misbehave", "error", "reason"),
    [
        pytest.param(
            lambda fake: fake.answer_next({"prompt": "\x00\u200b \n"}),
            "invalid_provider_output",
            None,
            id="only-control-characters",
        ),
        pytest.param(
            lambda fake: fake.answer_next({"prompt": 42}), "invalid_provider_output", None, id="not-a-string"
        ),
        pytest.param(lambda fake: fake.truncate_next(), "invalid_provider_output", None, id="truncated"),
        pytest.param(lambda fake: fake.refuse_next(), "invalid_provider_output", None, id="refused"),
        pytest.param(lambda fake: fake.fail_next(500), "provider_error", "provider_error", id="500"),
        pytest.param(lambda fake: fake.fail_next(429), "provider_error", "provider_rate_limited", id="429"),
    ],
)
async def test_an_unusable_answer_is_502(
    llm_client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_llm: FakeLLM,
    misbehave: object,
    error: str,
    reason: str | None,
) -> None:
    assert callable(misbehave)
    misbehave(fake_llm)
    body = assert_error(await llm_client.post(ENHANCE, headers=auth, json={"prompt": "a cat"}), 502, error)
    if reason:
        assert body["reason"] == reason


async def test_a_model_that_answers_too_late_is_502_provider_timeout(
    settings: Settings, database: Database, auth: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.slow_next(1.5)
    quick = settings.model_copy(update={"prompt_enhance_timeout_seconds": 0.3})
    async with app_client(quick, database) as client:
        response = await client.post(ENHANCE, headers=auth, json={"prompt": "a cat"})
        assert assert_error(response, 502, "provider_error")["reason"] == "provider_timeout"


@pytest.mark.parametrize("missing", ["openai_api_key", "anthropic_api_key"])
async def test_without_a_key_it_is_503(
    settings: Settings, database: Database, auth: dict[str, str], fake_llm: FakeLLM, missing: str
) -> None:
    unkeyed = settings.model_copy(update={"llm_provider": missing.split("_")[0], missing: None})
    async with app_client(unkeyed, database) as client:
        response = await client.post(ENHANCE, headers=auth, json={"prompt": "a cat"})
        assert_error(response, 503, "provider_not_configured")
    assert fake_llm.requests == []


@pytest.mark.parametrize(
    "body",
    [{}, {"prompt": ""}, {"prompt": "x" * 2001}, {"prompt": "a cat", "style": "s" * 101}],
)
async def test_bad_input_is_422_and_never_reaches_the_model(
    llm_client: httpx.AsyncClient, auth: dict[str, str], fake_llm: FakeLLM, body: dict[str, str]
) -> None:
    assert_error(await llm_client.post(ENHANCE, headers=auth, json=body), 422, "validation_error")
    assert_error(
        await llm_client.post(ENHANCE, headers=auth, json={"prompt": "\u200b\x07 \n"}), 422, "invalid_prompt"
    )
    assert_error(await llm_client.post(ENHANCE, json={"prompt": "a cat"}), 401, "unauthenticated")
    assert fake_llm.requests == []

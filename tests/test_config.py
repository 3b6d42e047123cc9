from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Environment
from tests.conftest import make_settings

STRONG_SECRET = "x" * 48


def test_database_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = make_settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'pixforge.db'}"


def test_explicit_database_url_wins() -> None:
    url = "postgresql+asyncpg://app@db:5432/pixforge"
    assert make_settings(database_url=url).resolved_database_url == url


def test_development_accepts_the_example_secret() -> None:
    settings = make_settings(environment=Environment.development)
    assert settings.secret_key.get_secret_value() == "changethis"


@pytest.mark.parametrize("secret", ["changethis", "", "   "])
def test_production_refuses_a_default_or_empty_secret_key(secret: str) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        make_settings(environment=Environment.production, secret_key=secret)


def test_production_refuses_a_short_secret_key() -> None:
    with pytest.raises(ValidationError, match=r"SECRET_KEY \(shorter than 32"):
        make_settings(environment=Environment.production, secret_key="s3cr3t-but-short")


def test_production_names_every_default_provider_secret() -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(
            environment=Environment.production,
            secret_key=STRONG_SECRET,
            stripe_webhook_secret="changethis",
            clipdrop_api_key="",
        )
    message = str(raised.value)
    assert "STRIPE_WEBHOOK_SECRET" in message
    assert "CLIPDROP_API_KEY" in message
    assert "SECRET_KEY" not in message.replace("STRIPE_WEBHOOK_SECRET", "")


def test_production_starts_with_real_secrets_and_unset_providers() -> None:
    settings = make_settings(
        environment=Environment.production, secret_key=STRONG_SECRET, stripe_secret_key="sk_live_abc"
    )
    assert settings.stripe_webhook_secret is None
    assert settings.json_logs


def test_secrets_do_not_leak_through_repr() -> None:
    settings = make_settings(secret_key=STRONG_SECRET, stripe_secret_key="sk_live_abc")
    assert STRONG_SECRET not in repr(settings)
    assert "sk_live_abc" not in repr(settings)


def test_cors_origins_are_read_from_a_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com/, https://admin.example.com")
    assert make_settings().cors_origins == ["https://app.example.com", "https://admin.example.com"]


def test_cors_wildcard_is_refused() -> None:
    with pytest.raises(ValidationError, match="exact origins"):
        make_settings(cors_origins=["*"])


def test_every_setting_is_documented_in_env_example() -> None:
    from app.config import Settings

    example = (Path(__file__).parent.parent / ".env.example").read_text()
    documented = {line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line}
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_vat_rates_are_read_from_country_percent_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAT_RATES", "DE=19, fr=20,IE=23.5")
    assert make_settings().vat_rates == {"DE": Decimal(19), "FR": Decimal(20), "IE": Decimal("23.5")}


@pytest.mark.parametrize("rates", ["DE", "DEU=19", "DE=100", "DE=-1", "DE=19.125", "DE=abc", "DE=NaN"])
def test_bad_vat_rates_are_refused(monkeypatch: pytest.MonkeyPatch, rates: str) -> None:
    monkeypatch.setenv("VAT_RATES", rates)
    with pytest.raises(ValidationError, match=r"(?i)vat_rates"):
        make_settings()

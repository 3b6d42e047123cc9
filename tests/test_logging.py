from __future__ import annotations

import json

import pytest
import structlog

from app.logging import REDACTED, configure_logging
from tests.conftest import make_settings


def test_json_logs_redact_secrets_by_key(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(make_settings(log_format="json"))
    structlog.get_logger("test").info(
        "user.login", email="a@example.com", password="hunter2", refresh_token="abc", authorization="Bearer x"
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "user.login"
    assert line["email"] == "a@example.com"
    assert line["password"] == line["refresh_token"] == line["authorization"] == REDACTED
    assert "hunter2" not in json.dumps(line)


def test_console_logs_in_development(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(make_settings(log_format="auto", environment="development"))
    structlog.get_logger("test").info("hello.console", answer=42)
    err = capsys.readouterr().err
    assert "hello.console" in err
    assert "answer" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.strip().splitlines()[-1])

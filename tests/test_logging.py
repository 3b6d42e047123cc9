from __future__ import annotations

import json

import pytest
import structlog

from app.logging import REDACTED, TRACEBACK_CHARS, TRACEBACK_FRAMES, VALUE_CHARS, configure_logging
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


def _fail_with_a_big_local() -> None:
    blob = "B" * 500_000  # a frame local no log line may carry
    raise ValueError("the exception's own words " + blob[:10])


def test_console_tracebacks_are_plain_without_locals_and_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """Rendering runs on the event loop: a rich traceback with every frame's locals took ~20 s."""
    configure_logging(make_settings(log_format="console", environment="development"))
    try:
        _fail_with_a_big_local()
    except ValueError:
        structlog.get_logger("test").exception("it.failed")
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "ValueError: the exception's own words BBBBBBBBBB" in err
    assert "_fail_with_a_big_local" in err
    assert "B" * 100 not in err  # no locals
    assert " locals " not in err  # rich's box title
    assert len(err) < TRACEBACK_CHARS + 1000


def _recurse(depth: int) -> None:
    if depth == 0:
        raise RuntimeError("bottom " + "x" * (2 * TRACEBACK_CHARS))
    _recurse(depth - 1)


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_deep_or_wordy_traceback_is_cut_to_its_bounds(
    capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    configure_logging(make_settings(log_format=log_format, environment="development"))
    try:
        _recurse(200)
    except RuntimeError:
        structlog.get_logger("test").exception("deep.failure", note="n" * (3 * VALUE_CHARS))
    err = capsys.readouterr().err
    text = json.loads(err.strip().splitlines()[-1])["exception"] if log_format == "json" else err
    assert text.count("in _recurse") <= TRACEBACK_FRAMES
    assert "characters cut" in text
    assert len(err) < TRACEBACK_CHARS + VALUE_CHARS + 1000
    assert "n" * (VALUE_CHARS + 1) not in err

"""The console script as an operator uses it: migrate a fresh database, then serve."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.cli import main

PIXFORGE = [sys.executable, "-m", "app.cli"]


def _environment(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "PORT"))}
    env.update(DATA_DIR=str(data_dir), ENVIRONMENT="development", LOG_FORMAT="json")
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out
    assert "migrate" in out


def test_migrate_then_serve_on_the_embedded_defaults(tmp_path: Path) -> None:
    env = _environment(tmp_path / "data")
    subprocess.run([*PIXFORGE, "migrate"], env=env, check=True, capture_output=True, timeout=60)
    with sqlite3.connect(tmp_path / "data" / "pixforge.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "alembic_version"} <= tables

    port = _free_port()
    server = subprocess.Popen(
        [*PIXFORGE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "webhooks": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=2).status_code == 200
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0].decode()
    access = [line for line in output.splitlines() if '"http.request"' in line]
    assert any('"/readyz"' in line and '"request_id"' in line for line in access), output


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        ([], "the database has no schema yet: run `pixforge migrate` first"),
        (
            [["migrate", "0001_users"]],
            "the database's schema is behind this version: run `pixforge migrate` first",
        ),
        (
            [["migrate"], ["stamp:ffffffffffff"]],
            "the database's schema (ffffffffffff) is newer than this version of Pixforge knows",
        ),
    ],
)
def test_serve_on_a_database_not_at_this_versions_schema_says_what_to_do(
    tmp_path: Path, prepare: list[list[str]], message: str
) -> None:
    env = _environment(tmp_path / "data")
    for step in prepare:
        if step[0].startswith("stamp:"):
            with sqlite3.connect(tmp_path / "data" / "pixforge.db") as db:
                db.execute("UPDATE alembic_version SET version_num = ?", (step[0].removeprefix("stamp:"),))
        else:
            subprocess.run([*PIXFORGE, *step], env=env, check=True, capture_output=True, timeout=60)
    served = subprocess.run(
        [*PIXFORGE, "serve", "--port", str(_free_port())], env=env, capture_output=True, timeout=60, text=True
    )
    assert served.returncode == 1
    assert served.stderr.strip() == f"pixforge serve: {message}"


def test_sweep_deletes_what_retention_says_and_reports(tmp_path: Path) -> None:
    env = _environment(tmp_path / "data")
    subprocess.run([*PIXFORGE, "migrate"], env=env, check=True, capture_output=True, timeout=60)
    database = tmp_path / "data" / "pixforge.db"
    old, young = "2000-01-01 00:00:00.000000", "2999-01-01 00:00:00.000000"
    with sqlite3.connect(database) as db:
        user_id = "0" * 32
        db.execute(
            "INSERT INTO users (id, plan, role, is_active, created_at, updated_at)"
            " VALUES (?, 'free', 'user', 1, ?, ?)",
            (user_id, young, young),
        )
        for job_id, created in (("1" * 32, old), ("2" * 32, young)):
            db.execute(
                "INSERT INTO jobs (id, user_id, kind, status, outputs, options, credits_reserved, attempts, "
                "is_favourite, created_at, updated_at)"
                " VALUES (?, ?, 'vectorize', 'COMPLETED', '[]', '{}', 0, 1, 0, ?, ?)",
                (job_id, user_id, created, created),
            )
    result = subprocess.run(
        [*PIXFORGE, "sweep"],
        env={**env, "RETENTION_HOURS_VECTORIZE": "24", "LOG_LEVEL": "WARNING"},
        check=True,
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert "'vectorize': 1" in result.stdout
    with sqlite3.connect(database) as db:
        assert [row[0] for row in db.execute("SELECT id FROM jobs")] == ["2" * 32]


def test_create_admin_then_set_role(tmp_path: Path) -> None:
    env = {**_environment(tmp_path / "data"), "LOG_LEVEL": "WARNING"}
    subprocess.run([*PIXFORGE, "migrate"], env=env, check=True, capture_output=True, timeout=60)

    def pixforge(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PIXFORGE, *args], env=env, input=stdin, capture_output=True, timeout=60, text=True
        )

    password = "correct horse battery\n"
    created = pixforge("create-admin", "Boss@Example.com", "--password-stdin", stdin=password)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created admin boss@example.com")
    again = pixforge("create-admin", "boss@example.com")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("promoted admin")
    assert pixforge("set-role", "boss@example.com", "user").stdout.strip() == "boss@example.com is now user"
    missing = pixforge("set-role", "nobody@example.com", "admin")
    assert missing.returncode != 0
    assert "no account" in missing.stderr
    short = pixforge("create-admin", "new@example.com", "--password-stdin", stdin="short\n")
    assert short.returncode != 0
    assert "at least 8" in short.stderr
    with sqlite3.connect(tmp_path / "data" / "pixforge.db") as db:
        query = "SELECT email, role, email_verified_at IS NOT NULL, password_hash FROM users"
        users = list(db.execute(query))
        actions = [row[0] for row in db.execute("SELECT details FROM audit_logs ORDER BY created_at")]
    assert [row[:3] for row in users] == [("boss@example.com", "user", 1)]
    assert users[0][3]
    assert "correct horse" not in users[0][3]
    # Created as admin, then demoted; promoting an admin changes nothing and records nothing.
    assert len(actions) == 2
    assert '"to": "user"' in actions[1]
    assert all("correct horse" not in details for details in actions)

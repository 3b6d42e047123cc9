"""Throw-away databases for the suite: a temp SQLite file, or a fresh database created next to the
one named in TEST_DATABASE_URLS (so a crashed run never leaves state behind in the named one)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from alembic import command
from app.cli import alembic_config
from app.db.session import EngineOptions, create_engine

DEFAULT_URLS = "sqlite"


@dataclass(frozen=True)
class TestDatabase:
    __test__ = False
    id: str
    admin_url: str | None  # None for SQLite: a file is created instead


def configured_databases() -> list[TestDatabase]:
    names = os.environ.get("TEST_DATABASE_URLS", DEFAULT_URLS)
    databases = []
    for raw in (part.strip() for part in names.split(",")):
        if not raw:
            continue
        if raw == "sqlite":
            databases.append(TestDatabase("sqlite", None))
            continue
        backend = make_url(raw).get_backend_name()
        databases.append(TestDatabase("mariadb" if backend == "mysql" else backend, raw))
    return databases


async def _admin_execute(admin_url: str, statement: str) -> None:
    # Dropping a database waits for other sessions' locks: give it longer than a request would get.
    engine = create_engine(admin_url, EngineOptions(statement_timeout_seconds=120))
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def fresh_database(database: TestDatabase) -> Iterator[str]:
    """Yields the URL of a new, empty database, and drops it afterwards."""
    if database.admin_url is None:
        with tempfile.TemporaryDirectory(prefix="pixforge-test-") as folder:
            yield f"sqlite+aiosqlite:///{Path(folder) / 'test.db'}"
        return
    name = f"pixforge_test_{uuid.uuid4().hex[:12]}"
    quote = '"' if database.id == "postgresql" else "`"
    asyncio.run(_admin_execute(database.admin_url, f"CREATE DATABASE {quote}{name}{quote}"))
    try:
        yield make_url(database.admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if database.id == "postgresql" else ""
        asyncio.run(
            _admin_execute(database.admin_url, f"DROP DATABASE IF EXISTS {quote}{name}{quote}{force}")
        )


def migrate(url: str, revision: str = "head") -> None:
    config = alembic_config(url)
    config.attributes["configure_logging"] = False
    command.upgrade(config, revision)


def downgrade(url: str, revision: str = "base") -> None:
    config = alembic_config(url)
    config.attributes["configure_logging"] = False
    command.downgrade(config, revision)


def check_no_drift(url: str) -> None:
    config = alembic_config(url)
    config.attributes["configure_logging"] = False
    command.check(config)

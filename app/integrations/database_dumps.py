"""Consistent database snapshots and their restore, each through the database's own means: SQLite's
online backup API, `pg_dump`/`pg_restore` on an exported snapshot, `mariadb-dump --single-transaction`
and the `mariadb` client. Row counts come from the same snapshot wherever the database allows it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import column, func, inspect, select, table, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from app.db.session import create_engine

VERSION_TABLE = "alembic_version"


class DumpError(Exception):
    """The snapshot or the restore did not complete; the message says why (never a password)."""


class MissingTool(DumpError):
    pass


@dataclass(frozen=True)
class Snapshot:
    file: str
    dialect: str
    revision: str | None
    counts: dict[str, int]
    # MariaDB dumps in a snapshot of its own: its counts are read just before, exact only when idle.
    counts_exact: bool


def dialect_of(url: str) -> str:
    backend = make_url(url).get_backend_name()
    return "mariadb" if backend == "mysql" else backend


async def snapshot(url: str, folder: Path) -> Snapshot:
    dialect = dialect_of(url)
    if dialect == "sqlite":
        return await _sqlite_snapshot(_sqlite_path(url), folder / "database.sqlite3")
    if dialect == "postgresql":
        return await _postgres_snapshot(url, folder / "database.pgdump")
    if dialect == "mariadb":
        return await _mariadb_snapshot(url, folder / "database.sql")
    raise DumpError(f"no backup method for {dialect}")


async def restore(url: str, file: Path, *, clean: bool) -> None:
    dialect = dialect_of(url)
    if dialect == "sqlite":
        await asyncio.to_thread(_sqlite_restore, file, _sqlite_path(url))
    elif dialect == "postgresql":
        connect, env = _postgres_client(make_url(url))
        flags = ["--clean", "--if-exists"] if clean else []
        await _run(
            _tool("pg_restore"), [*connect, "--no-owner", "--exit-on-error", *flags, str(file)], env=env
        )
    elif dialect == "mariadb":
        parsed = make_url(url)
        connect, env = _mariadb_client(parsed)
        # The dump drops and recreates each table it holds, so a migrated empty target is fine as is.
        await _run(_tool("mariadb", "mysql"), [*connect, parsed.database or ""], env=env, stdin=file)
    else:
        raise DumpError(f"no restore method for {dialect}")


async def row_counts(url: str) -> dict[str, int]:
    """Rows per table of the database as it is now (alembic's own table left out)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await _counts(connection)
    finally:
        await engine.dispose()


async def _counts(connection: AsyncConnection) -> dict[str, int]:
    names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    names = [name for name in names if not name.startswith("sqlite_")]
    return {
        name: int((await connection.execute(select(func.count()).select_from(table(name)))).scalar_one())
        for name in sorted(names)
        if name != VERSION_TABLE
    }


async def _revision(connection: AsyncConnection) -> str | None:
    names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    if VERSION_TABLE not in names:
        return None
    version: Select[Any] = select(column("version_num")).select_from(table(VERSION_TABLE))
    found = (await connection.execute(version)).scalar()
    return None if found is None else str(found)


# --- SQLite -----------------------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise DumpError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def _sqlite_copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise DumpError(f"no SQLite database at {source}")
    with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(target)) as copy:
        # The online backup API copies a consistent image while other connections keep writing.
        live.backup(copy)


async def _sqlite_snapshot(source: Path, target: Path) -> Snapshot:
    await asyncio.to_thread(_sqlite_copy, source, target)
    # Counted in the copy, so they describe exactly what the backup holds.
    copy_url = f"sqlite+aiosqlite:///{target}"
    counts = await row_counts(copy_url)
    engine = create_engine(copy_url)
    try:
        async with engine.connect() as connection:
            revision = await _revision(connection)
    finally:
        await engine.dispose()
    return Snapshot(target.name, "sqlite", revision, counts, counts_exact=True)


def _sqlite_restore(file: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(file)) as source, closing(sqlite3.connect(target)) as live:
        source.backup(live)


# --- PostgreSQL -------------------------------------------------------------------------------------


def _client(
    url: URL, *, port: int, user_flag: str, user: str, env_name: str
) -> tuple[list[str], dict[str, str]]:
    """The client tool's connection flags, and its environment: the password goes through the
    environment, never the command line other users can read."""
    flags = [
        f"--host={url.host or '127.0.0.1'}",
        f"--port={url.port or port}",
        f"{user_flag}={url.username or user}",
    ]
    return flags, ({env_name: url.password} if url.password else {})


def _postgres_client(url: URL) -> tuple[list[str], dict[str, str]]:
    flags, env = _client(url, port=5432, user_flag="--username", user="postgres", env_name="PGPASSWORD")
    return [*flags, f"--dbname={url.database or 'postgres'}"], env


async def _postgres_snapshot(url: str, target: Path) -> Snapshot:
    pg_dump = _tool("pg_dump")
    connect, env = _postgres_client(make_url(url))
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                # pg_dump joins this transaction's snapshot: the counts and the dump see the same rows.
                exported = (await connection.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
                counts = await _counts(connection)
                revision = await _revision(connection)
                dump = [*connect, f"--snapshot={exported}", "--format=custom", f"--file={target}"]
                await _run(pg_dump, dump, env=env)
    finally:
        await engine.dispose()
    return Snapshot(target.name, "postgresql", revision, counts, counts_exact=True)


# --- MariaDB ----------------------------------------------------------------------------------------


def _mariadb_client(url: URL) -> tuple[list[str], dict[str, str]]:
    return _client(url, port=3306, user_flag="--user", user="root", env_name="MYSQL_PWD")


async def _mariadb_snapshot(url: str, target: Path) -> Snapshot:
    dump = _tool("mariadb-dump", "mysqldump")
    parsed = make_url(url)
    counts = await row_counts(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            revision = await _revision(connection)
    finally:
        await engine.dispose()
    connect, env = _mariadb_client(parsed)
    await _run(
        dump, [*connect, "--single-transaction", f"--result-file={target}", parsed.database or ""], env=env
    )
    return Snapshot(target.name, "mariadb", revision, counts, counts_exact=False)


# --- processes --------------------------------------------------------------------------------------


def _tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise MissingTool(f"{names[0]} not found on PATH: install the database's client tools to back it up")


async def _run(program: str, args: Sequence[str], *, env: dict[str, str], stdin: Path | None = None) -> None:
    source = await asyncio.to_thread(stdin.open, "rb") if stdin else None
    try:
        process = await asyncio.create_subprocess_exec(
            program,
            *args,
            stdin=source or asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
        )
        _, errors = await process.communicate()
    finally:
        if source:
            source.close()
    if process.returncode != 0:
        message = errors.decode(errors="replace").strip().splitlines()[-3:]
        raise DumpError(f"{Path(program).name} failed ({process.returncode}): {' '.join(message)}")

"""Engines, sessions and the project's single commit point.

Nothing else in the code base commits: services and repositories flush, and the unit of work is
closed here, for a request by `get_db_session` (which FastAPI runs with scope="function", so the
commit lands before the response and before any BackgroundTask starts), for a task by
`session_scope()`, and for the hottest writes (Core statements, no session) by `writing()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import Settings
from app.db.fair_pool import FairAsyncQueuePool
from app.errors import AppError


@dataclass(frozen=True)
class EngineOptions:
    connect_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 15.0
    pool_size: int = 20
    max_overflow: int = 10
    pool_timeout_seconds: float = 30.0
    pool_pre_ping: bool = False
    echo: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineOptions:
        return cls(
            connect_timeout_seconds=settings.db_connect_timeout_seconds,
            statement_timeout_seconds=settings.db_statement_timeout_seconds,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout_seconds=settings.db_pool_timeout_seconds,
            pool_pre_ping=settings.db_pool_pre_ping,
            echo=settings.db_echo,
        )


def create_engine(url: str | URL, options: EngineOptions | None = None) -> AsyncEngine:
    """An async engine for SQLite (aiosqlite), PostgreSQL (asyncpg) or MySQL/MariaDB (asyncmy).

    Each backend gets a connect timeout and a statement timeout, so a database that is down or
    stuck turns into a fast error (answered 503) instead of a hung request.
    """
    options = options or EngineOptions()
    url = make_url(url)
    backend = url.get_backend_name()
    # hide_parameters: statement parameters (password hashes, token digests) stay out of logs and errors.
    # No pre-ping by default: it is a round trip per checkout, i.e. per request. A connection the server
    # closed fails its first statement instead; SQLAlchemy then invalidates every pooled connection
    # opened before, so after a database restart one request per process gets the 503, not all of them.
    kwargs: dict[str, Any] = {
        "echo": options.echo,
        "pool_pre_ping": options.pool_pre_ping,
        "hide_parameters": True,
    }
    if backend == "sqlite":
        return _create_sqlite_engine(url, options, kwargs)
    kwargs.update(
        poolclass=FairAsyncQueuePool,
        pool_size=options.pool_size,
        max_overflow=options.max_overflow,
        pool_timeout=options.pool_timeout_seconds,
        pool_recycle=1800,
    )
    if backend == "postgresql":
        statement_ms = int(options.statement_timeout_seconds * 1000)
        kwargs["connect_args"] = {
            "timeout": options.connect_timeout_seconds,
            # The client-side limit is a little looser so the server's own error wins when both fire.
            "command_timeout": options.statement_timeout_seconds + 5,
            "server_settings": {"statement_timeout": str(statement_ms), "application_name": "pixforge"},
        }
        return create_async_engine(url, **kwargs)
    if backend in ("mysql", "mariadb"):
        kwargs["connect_args"] = {"connect_timeout": max(1, round(options.connect_timeout_seconds))}
        # InnoDB defaults to REPEATABLE READ, where a re-read after a unique-key clash or a refused
        # conditional UPDATE still sees the old snapshot; READ COMMITTED behaves like PostgreSQL.
        kwargs["isolation_level"] = "READ COMMITTED"
        engine = create_async_engine(url, **kwargs)
        _install_mysql_statement_timeout(engine, options.statement_timeout_seconds)
        return engine
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite, postgresql or mysql/mariadb")


# Execution option for a connection that only reads: on SQLite its transaction does not take the write
# lock (every other transaction does, see _create_sqlite_engine). Ignored by the other backends.
SQLITE_READ_ONLY = "pixforge_sqlite_read_only"


def _create_sqlite_engine(url: URL, options: EngineOptions, kwargs: dict[str, Any]) -> AsyncEngine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    busy_timeout_ms = int(options.statement_timeout_seconds * 1000)
    kwargs["connect_args"] = {"timeout": options.statement_timeout_seconds}
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # sqlite3's own transaction handling breaks SAVEPOINT; SQLAlchemy emits BEGIN itself below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that has read and then writes after another connection committed is
        # refused at once ("database is locked"): the busy timeout does not cover that upgrade. Taking
        # the write lock up front makes writers queue on the busy timeout instead, which SQLite (one
        # writer at a time) would impose anyway. Readers that never write may say so and not queue.
        read_only = connection.get_execution_options().get(SQLITE_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _install_mysql_statement_timeout(engine: AsyncEngine, seconds: float) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # MariaDB names it max_statement_time (seconds); MySQL max_execution_time (ms, SELECT only).
            cursor.execute(f"SET SESSION max_statement_time = {seconds:.3f}")
        except Exception:  # noqa: BLE001 - MySQL refuses the MariaDB name; any error means "try MySQL's"
            cursor.execute(f"SET SESSION max_execution_time = {int(seconds * 1000)}")
        finally:
            cursor.close()


class Database:
    """The process's engine and session factory, built once in the app's lifespan, and `reading()`
    for the hottest reads."""

    def __init__(self, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession] | None = None):
        self.engine = engine
        self.sessionmaker = sessionmaker or async_sessionmaker(engine, expire_on_commit=False)
        bound = sessionmaker.kw.get("bind") if sessionmaker is not None else None
        self._shared_connection = bound if isinstance(bound, AsyncConnection) else None
        self._reader = _reading(engine)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for the hottest reads, Core statements only. It runs them without a transaction
        of its own (autocommit), which saves such a request two of its three round trips (BEGIN and
        COMMIT around one SELECT), and without an ORM session, which cost it a quarter of its CPU time.
        On the tests' one rolled-back connection, that connection (left open)."""
        if self._shared_connection is not None:
            yield self._shared_connection
            return
        async with self._reader.connect() as connection:
            yield connection

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on a Core connection for the hottest writes (a design charge: one UPDATE, two
        INSERTs), without an ORM session around them: committed when the block ends, rolled back when it
        raises. On the tests' one rolled-back connection, a savepoint on it."""
        if self._shared_connection is not None:
            async with self._shared_connection.begin_nested():
                yield self._shared_connection
            return
        async with self.engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection that commits each statement as it runs, for one statement that is atomic by itself:
        no BEGIN and COMMIT round trips. SQLite has no such mode: there, `writing()`."""
        if self._shared_connection is not None or self.engine.dialect.name == "sqlite":
            async with self.writing() as connection:
                yield connection
            return
        async with self._reader.connect() as connection:
            yield connection

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(create_engine(settings.resolved_database_url, EngineOptions.from_settings(settings)))

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            connection = await connection.execution_options(**{SQLITE_READ_ONLY: True})
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def session_scope(self) -> AsyncIterator[AsyncSession]:
        """A unit of work for code outside a request (tasks, CLI): commit on success, else roll back."""
        async with self.sessionmaker() as session:
            try:
                yield session
            except AppError as error:
                await (session.commit() if error.keep_changes else session.rollback())
                raise
            except BaseException:
                await session.rollback()
                raise
            await session.commit()


def _reading(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, its connections in autocommit while a reader holds them (on asyncpg a
    client-side switch; SQLite has no such mode and reads in a deferred transaction, which takes no
    write lock)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SQLITE_READ_ONLY: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def get_db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work. Use through `SessionDep` (scope="function")."""
    database: Database = request.app.state.database
    async with database.session_scope() as session:
        yield session


async def release_connection(session: AsyncSession) -> None:
    """End the request's transaction and give its connection back to the pool: for a request about to
    wait a long time on work that runs in units of work of its own (an AI job), so that waiting clients
    do not hold connections the jobs need. What the request wrote so far (authentication creating a
    first-time Clerk user) is committed, as it would have been at the end. The session stays usable
    (the next query opens a new transaction); the objects it loaded stay readable, detached."""
    await session.commit()
    await session.close()

"""The database layer on every configured backend: dialect options, UTC timestamps, the commit point."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db.retry import transient_database_error
from app.db.session import Database, EngineOptions, create_engine
from app.errors import DatabaseUnavailable, database_error_as_app_error
from app.main import create_app
from app.models import User
from tests.support.databases import TestDatabase
from tests.support.probe_routes import probe_router, seen_by_background_task


async def test_utc_timestamps_round_trip_with_microseconds(session: AsyncSession) -> None:
    moment = datetime(2026, 11, 26, 12, 30, 45, 123456, tzinfo=UTC)
    user = User(email=f"{uuid.uuid4().hex}@example.com", email_verified_at=moment)
    session.add(user)
    await session.flush()
    session.expunge_all()
    loaded = await session.scalar(select(User).where(User.id == user.id))
    assert loaded is not None
    assert loaded.email_verified_at == moment
    assert loaded.email_verified_at.tzinfo is not None
    assert loaded.created_at.tzinfo is not None
    assert abs(loaded.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert isinstance(loaded.id, uuid.UUID)


async def test_naive_datetimes_are_refused(session: AsyncSession) -> None:
    session.add(User(email="naive@example.com", email_verified_at=datetime(2026, 1, 1)))
    with pytest.raises(Exception, match="naive datetime"):
        await session.flush()


async def test_unique_constraints_hold(session: AsyncSession) -> None:
    session.add(User(email="twice@example.com"))
    await session.flush()
    session.add(User(email="twice@example.com"))
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_sqlite_runs_in_wal_with_foreign_keys_and_busy_timeout(
    engine: AsyncEngine, test_database: TestDatabase
) -> None:
    if test_database.id != "sqlite":
        pytest.skip("SQLite pragmas")
    async with engine.connect() as connection:
        assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar_one() == "wal"
        assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar_one() == 1
        assert (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar_one() == 15000


async def test_statement_timeout_is_set_on_every_connection(
    engine: AsyncEngine, test_database: TestDatabase
) -> None:
    async with engine.connect() as connection:
        if test_database.id == "postgresql":
            assert (await connection.execute(text("SHOW statement_timeout"))).scalar_one() == "15s"
        elif test_database.id == "mariadb":
            value = (await connection.execute(text("SELECT @@SESSION.max_statement_time"))).scalar_one()
            assert float(value) == 15.0
        else:
            pytest.skip("SQLite has no statement timeout; its busy timeout is checked above")


@pytest.fixture
def committing_app(settings: Settings, engine: AsyncEngine) -> Iterator[FastAPI]:
    """An app whose sessions really commit (no enclosing test transaction), to observe the order of
    commit, response and background task the way production sees it."""
    app = create_app(settings, Database(engine))
    app.include_router(probe_router)
    return app


@pytest.fixture
async def committing_client(committing_app: FastAPI, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=committing_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
    async with engine.begin() as connection:
        await connection.execute(delete(User).where(User.email.like("%@commit-point.test")))


class TestCommitPoint:
    async def test_commit_lands_before_the_background_task_runs(
        self, committing_client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        response = await committing_client.post("/probe/users", params={"email": "a@commit-point.test"})
        assert response.status_code == 201
        user_id = response.json()["id"]
        assert seen_by_background_task[user_id] is True
        async with engine.connect() as connection:
            found = await connection.scalar(select(User.id).where(User.email == "a@commit-point.test"))
        assert str(found) == user_id

    async def test_an_error_after_a_write_rolls_everything_back(
        self, committing_client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        response = await committing_client.post(
            "/probe/users", params={"email": "b@commit-point.test", "fail": "true"}
        )
        assert response.status_code == 409
        async with engine.connect() as connection:
            found = await connection.scalar(select(User.id).where(User.email == "b@commit-point.test"))
        assert found is None


class TestIsolation:
    """Two tests write the same unique email: both pass only if each runs in its own rollback."""

    @pytest.mark.parametrize("attempt", [1, 2])
    async def test_rows_do_not_leak_between_tests(self, client: httpx.AsyncClient, attempt: int) -> None:
        app = client._transport.app  # type: ignore[attr-defined]
        app.include_router(probe_router)
        response = await client.post("/probe/users", params={"email": "isolated@example.com"})
        assert response.status_code == 201, f"attempt {attempt}: {response.text}"


def _silent_port() -> tuple[socket.socket, int]:
    """A TCP port that accepts connections and never answers: a database that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, listener.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestDatabaseDown:
    """A database that refuses or hangs answers 503 quickly, never a hang or a 500."""

    @pytest.fixture(params=["refusing", "hanging"])
    async def down_client(
        self, request: pytest.FixtureRequest, settings: Settings
    ) -> AsyncIterator[httpx.AsyncClient]:
        listener = None
        if request.param == "hanging":
            listener, port = _silent_port()
        else:
            port = _closed_port()
        options = EngineOptions(connect_timeout_seconds=0.5, pool_timeout_seconds=0.5)
        database = Database(create_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{port}/none", options))
        app = create_app(settings.model_copy(update={"db_connect_timeout_seconds": 0.5}), database)
        app.include_router(probe_router)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client
        await database.dispose()
        if listener is not None:
            listener.close()

    async def test_readyz_names_the_database(self, down_client: httpx.AsyncClient) -> None:
        response = await asyncio.wait_for(down_client.get("/readyz"), timeout=5)
        assert response.status_code == 503
        body = response.json()
        assert body["error"] == "service_unavailable"
        assert "database" in body["detail"]
        assert body["checks"] == {"database": "unreachable"}

    async def test_a_request_that_needs_the_database_answers_503(
        self, down_client: httpx.AsyncClient
    ) -> None:
        response = await asyncio.wait_for(down_client.get("/probe/db"), timeout=5)
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
        assert response.headers["x-request-id"] == response.json()["request_id"]


@pytest.mark.postgres_only
async def test_a_runaway_statement_is_cut_off(database_url: str) -> None:
    engine = create_engine(database_url, EngineOptions(statement_timeout_seconds=0.3))
    try:
        async with engine.connect() as connection:
            with pytest.raises(Exception, match="statement timeout"):
                await connection.execute(text("SELECT pg_sleep(5)"))
    finally:
        await engine.dispose()


@pytest.mark.postgres_only
async def test_a_statement_cut_off_by_its_timeout_answers_503_with_retry_after(
    database_url: str, settings: Settings
) -> None:
    database = Database(create_engine(database_url, EngineOptions(statement_timeout_seconds=0.3)))
    app = create_app(settings, database)
    app.include_router(probe_router)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            response = await client.get("/probe/db/sleep", params={"seconds": 5})
    finally:
        await database.dispose()
    assert response.status_code == 503  # query_canceled (57014), not a 500
    assert response.json()["error"] == "database_unavailable"
    assert response.headers["Retry-After"]


class _DriverError(Exception):
    """What a PostgreSQL driver raises: an error carrying its SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def _database_error(sqlstate: str) -> DBAPIError:
    return DBAPIError("SELECT 1", None, _DriverError(sqlstate))


@pytest.mark.parametrize(
    ("sqlstate", "unavailable", "transient"),
    [
        ("57P01", True, True),  # admin_shutdown: the server is stopping (a restart, a failover)
        ("57P02", True, True),  # crash_shutdown: another backend crashed, every session is ended
        ("57P03", True, True),  # cannot_connect_now: the server is still starting
        ("57014", True, False),  # query_canceled: a statement timeout, which a rerun would wait out again
        ("40P01", True, True),  # deadlock_detected: rolled back, may pass if sent again
        ("40001", True, True),  # serialization_failure: the same
        ("23505", False, False),  # unique_violation: a real error of the request's
    ],
)
def test_postgresql_errors_that_mean_retry_later_answer_503(
    sqlstate: str, unavailable: bool, transient: bool
) -> None:
    error = database_error_as_app_error(_database_error(sqlstate))
    assert isinstance(error, DatabaseUnavailable) is unavailable
    if error is not None:
        assert error.headers["Retry-After"]
    assert transient_database_error(_database_error(sqlstate)) is transient


async def test_a_reader_gives_its_connection_back(engine: AsyncEngine) -> None:
    database = Database(engine)
    before = engine.pool.checkedout()  # type: ignore[attr-defined]
    async with database.reading() as reader:
        assert (await reader.execute(text("SELECT 1"))).scalar() == 1
        assert engine.pool.checkedout() == before + 1  # type: ignore[attr-defined]
    assert engine.pool.checkedout() == before  # type: ignore[attr-defined]


@pytest.mark.postgres_only
async def test_a_reader_holds_no_transaction_open_between_its_statements(engine: AsyncEngine) -> None:
    """What the reading connection saves: no BEGIN before and no COMMIT after each read, so between two
    statements its server session is plainly idle (a transaction would show 'idle in transaction')."""
    database = Database(engine)
    async with database.reading() as reader, engine.connect() as observer:
        pid = (await reader.execute(text("SELECT pg_backend_pid()"))).scalar()
        state = await observer.scalar(
            text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
    assert state == "idle"

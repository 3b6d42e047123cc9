from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Environment, Settings
from app.container import Container
from app.db.session import Database, create_engine
from app.main import create_app
from app.models import User
from tests.factories import bearer, make_user
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.databases import TestDatabase, configured_databases, fresh_database, migrate
from tests.support.replicate import FakeReplicateWithTrainings

DATABASES = configured_databases()


@pytest.fixture(scope="session", params=DATABASES, ids=[database.id for database in DATABASES])
def test_database(request: pytest.FixtureRequest) -> TestDatabase:
    database: TestDatabase = request.param
    return database


@pytest.fixture(scope="session")
def database_url(test_database: TestDatabase) -> Iterator[str]:
    """A database migrated once per backend with `alembic upgrade head`, dropped at the end."""
    with fresh_database(test_database) as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection per test inside a transaction that is rolled back at the end: every commit the
    code under test makes only releases a savepoint, so tests never see each other's rows."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        if transaction.is_active:
            await transaction.rollback()


@pytest.fixture
def database(engine: AsyncEngine, connection: AsyncConnection) -> Database:
    sessionmaker = async_sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )
    return Database(engine, sessionmaker)


@pytest.fixture
async def session(database: Database) -> AsyncIterator[AsyncSession]:
    """The test's own session, on the same rolled-back connection as the app's."""
    async with database.sessionmaker() as session:
        yield session


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": Environment.testing,
        "log_format": "json",
        # The cheapest Argon2id the settings allow: hashing cost is not what these tests measure.
        "password_hash_memory_kib": 1024,
        "password_hash_time_cost": 1,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url=database_url)


@pytest.fixture
async def container(settings: Settings, database: Database) -> AsyncIterator[Container]:
    container = Container.build(settings, database)
    yield container
    await container.aclose()


@pytest.fixture
def app(settings: Settings, database: Database, container: Container) -> FastAPI:
    return create_app(settings, database, container)


@pytest.fixture
async def user(session: AsyncSession, settings: Settings) -> User:
    """A verified account with its signup bonus, in the test's transaction."""
    return await make_user(session, settings)


@pytest.fixture
def auth(container: Container, user: User) -> dict[str, str]:
    """`user`'s Authorization header."""
    return bearer(container, user)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def outside_http() -> Iterator[respx.MockRouter]:
    """Fakes of outside HTTP services. Any request to a host no test mocked fails the test, so the
    suite can never reach a real provider."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


@pytest.fixture(autouse=True)
def _only_on_postgresql(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres_only") is None:
        return
    if "test_database" not in request.fixturenames:
        raise pytest.UsageError("postgres_only tests must use a database fixture")
    if request.getfixturevalue("test_database").id != "postgresql":
        pytest.skip("needs PostgreSQL")


# --- payment providers, faked (shared by the billing, dispute and refund tests) ---------------------


@pytest.fixture(scope="module")
def fake_razorpay() -> Iterator[FakeRazorpay]:
    """One server per module (starting uvicorn per test would cost more than the tests)."""
    with FakeRazorpay() as fake:
        yield fake


@pytest.fixture
def fake_stripe(outside_http: respx.MockRouter) -> FakeStripe:
    return FakeStripe(outside_http)


@pytest.fixture
def fake_dodo(outside_http: respx.MockRouter) -> FakeDodo:
    return FakeDodo(outside_http)


@pytest.fixture
def fake_replicate(outside_http: respx.MockRouter) -> FakeReplicateWithTrainings:
    """Predictions, and the files, models and trainings personal models need."""
    return FakeReplicateWithTrainings(outside_http)


@pytest.fixture
async def committing(settings: Settings, engine: AsyncEngine) -> AsyncIterator[tuple[FastAPI, Database]]:
    """An app whose requests really commit, each on its own pooled connection, with its own container
    (the module's `settings`): for races on PostgreSQL. The test cleans up what it committed."""
    database = Database(engine)
    container = Container.build(settings, database)
    yield create_app(settings, database, container), database
    await container.aclose()

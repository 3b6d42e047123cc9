from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from functools import cache

import httpx
import httpx._transports.default
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
# Where a test marked `any_database` runs: SQLite when the run has it (the cheapest), else the first.
ANY_DATABASE = next((database for database in DATABASES if database.id == "sqlite"), None) or next(
    iter(DATABASES), None
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`any_database` tests run on one database only (ANY_DATABASE): their copies on the others are
    deselected, so they cost nothing, not even a skip."""
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        if item.get_closest_marker("any_database") is None:
            kept.append(item)
            continue
        if item.get_closest_marker("postgres_only") is not None:
            raise pytest.UsageError(f"{item.nodeid}: any_database and postgres_only contradict each other")
        callspec = getattr(item, "callspec", None)
        database = None if callspec is None else callspec.params.get("test_database")
        if database is None or database == ANY_DATABASE:
            kept.append(item)
        else:
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


_create_ssl_context = httpx._transports.default.create_ssl_context


@cache
def _default_ssl_context() -> ssl.SSLContext:
    return _create_ssl_context()


def _shared_default_ssl_context(
    verify: ssl.SSLContext | str | bool = True, cert: object = None, trust_env: bool = True
) -> ssl.SSLContext:
    if verify is True and cert is None and trust_env:
        return _default_ssl_context()
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)  # type: ignore[arg-type]


@pytest.fixture(scope="session", autouse=True)
def _one_ssl_context_for_every_http_client() -> Iterator[None]:
    """Every container builds an httpx client, and httpx loads certifi's CA bundle into a new SSL context
    for each (~50 ms of CPU, the biggest cost of a short test). The default context is the same every
    time and is never modified, so the suite's clients share one; any other `verify` gets its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx._transports.default, "create_ssl_context", _shared_default_ssl_context)
        yield


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
        # Palettes on the loop and cut-outs in threads: a worker process per test's container would
        # cost a second each to start. tests/test_compute.py and tests/integrations/test_local_engines.py
        # start real ones.
        "compute_processes": 0,
        "local_engine_processes": False,
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

"""Schemathesis against the app's own OpenAPI document (issue #15, item 4), in every `make test`.

For each documented operation, valid and invalid requests generated from the document (derandomized:
the same cases on every run) are sent as an admin, half with an access token and half with an API key
(the Hair Try-On routes get the token as their session cookie). Each answer must be what the document
promises: no server error (a 503 only as the documented `provider_not_configured` refusal), a declared
status code and content type, and a body that conforms to the declared schema.

FUZZ_EXAMPLES=<n> runs n examples per operation instead, FUZZ_RANDOM=1 new random ones (by hand, not CI).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from schemathesis.core.failures import FailureGroup
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.main import create_app
from tests.conftest import make_settings
from tests.factories import access_token, make_api_key, make_user
from tests.support import fuzz
from tests.support.hypothesis_budget import fuzz as budget

# One database is enough to fuzz the HTTP contract: SQLite (tests/conftest.py).
pytestmark = pytest.mark.any_database

# Operations whose valid requests do real work (image engines, report rendering): fewer examples.
EXPENSIVE = frozenset(
    {
        "POST /api/v1/images/remove-background",
        "POST /api/v1/images/vectorize",
        "POST /compat/purepic/api/v1/images/remove-background",
        "GET /api/v1/admin/reports/{kind}",
    }
)


def _operations() -> dict[str, Any]:
    app = create_app(make_settings(database_url="sqlite+aiosqlite://"))
    document = app.openapi()
    asyncio.run(app.state.container.aclose())
    asyncio.run(app.state.database.dispose())
    schema = fuzz.load_schema(document)
    return {result.ok().label: result.ok() for result in schema.get_all_operations()}


OPERATIONS = _operations()
# Each test builds one app (FastAPI readies a route on an app's first request to it), so the operations
# run in a few groups (spread over the xdist workers), not one test each.
GROUPS = 6
_ORDER = sorted(OPERATIONS)


def generated_cases(operation: Any, count: int) -> list[Any]:
    """`count` cases of `operation`, valid and invalid, the same ones on every run."""
    cases: list[Any] = []

    @budget(count)
    @given(case=fuzz.operation_strategy(operation))
    def collect(case: Any) -> None:
        cases.append(case)

    collect()
    return cases


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Rate limits would answer 429 (declared where they apply) long before the cases are all read.
    return make_settings(database_url=database_url, rate_limits_enabled=False)


@pytest.fixture
def credentials(
    session: AsyncSession, settings: Settings, container: Container, outside_http: respx.MockRouter
) -> Callable[[], Awaitable[tuple[fuzz.Credentials, fuzz.Credentials]]]:
    """A new admin (who may call every operation) with an access token and an API key, for each
    operation: the one before may have deleted, banned or signed out the last one. `outside_http` fails
    any call that would leave the process."""

    async def new_admin() -> tuple[fuzz.Credentials, fuzz.Credentials]:
        admin = await make_user(session, settings, role="admin")
        token = access_token(container, admin)
        key = (await make_api_key(session, admin))["Authorization"].removeprefix("Bearer ")
        origin = settings.cors_origins[0]
        return fuzz.Credentials(token, token, origin), fuzz.Credentials(key, token, origin)

    return new_admin


def test_every_operation_is_fuzzed() -> None:
    assert len(OPERATIONS) >= 120
    assert OPERATIONS.keys() >= EXPENSIVE
    assert sorted(label for group in range(GROUPS) for label in _ORDER[group::GROUPS]) == _ORDER


@pytest.mark.parametrize("group", range(GROUPS))
async def test_operations_answer_as_documented(
    client: httpx.AsyncClient,
    credentials: Callable[[], Awaitable[tuple[fuzz.Credentials, fuzz.Credentials]]],
    group: int,
) -> None:
    failures = []
    sent = 0
    for label in _ORDER[group::GROUPS]:
        by_token, by_key = await credentials()
        for index, case in enumerate(generated_cases(OPERATIONS[label], 4 if label in EXPENSIVE else 10)):
            response = await fuzz.send(client, case, by_key if index % 2 else by_token)
            sent += 1
            try:
                fuzz.validate(case, response)
            except FailureGroup as failure:
                failures.append(f"{label}: {failure}")
    assert not failures, "\n\n".join(failures)
    assert sent >= 5 * len(_ORDER[group::GROUPS])

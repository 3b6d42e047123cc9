"""Plan quotas of AI clones: GET /users/me/quotas (used/total/remaining, when a daily quota resets), the
settings that define them, and the refusals: 403 plan_required naming the plans that allow more, 429
quota_exceeded with its reset, checked on the service the endpoints call (POST /generations refusing
past the daily quota is tests/routers/test_generations.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.models import Job, JobKind, JobStatus, User
from app.services.clones import quotas
from tests.conftest import make_settings
from tests.factories import bearer, make_clone_model, make_user
from tests.support.http import assert_error

QUOTAS = "/api/v1/users/me/quotas"


def is_next_midnight(text: str) -> bool:
    """A UTC midnight within the coming day (the next one, whatever the time the test runs at)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    now = datetime.now(UTC)
    return (
        moment.utcoffset() == timedelta(0)
        and moment.time().isoformat() == "00:00:00"
        and (now < moment <= now + timedelta(days=1))
    )


async def add_generations(session: AsyncSession, user: User, count: int, **fields: object) -> None:
    session.add_all([Job(user_id=user.id, kind=JobKind.generate.value, **fields) for _ in range(count)])
    await session.commit()


async def by_name(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, dict[str, object]]:
    response = await client.get(QUOTAS, headers=headers)
    assert response.status_code == 200, response.text
    return {quota["name"]: quota for quota in response.json()["quotas"]}


async def test_a_free_account_sees_its_quotas_and_what_it_used(
    client: httpx.AsyncClient, auth: dict[str, str], session: AsyncSession, user: User
) -> None:
    fresh = await by_name(client, auth)
    assert fresh["models"] == {
        "name": "models",
        "period": "lifetime",
        "used": 0,
        "total": 5,
        "remaining": 5,
        "resets_at": None,
    }
    assert fresh["generations"]["total"] == 20
    assert fresh["generations"]["remaining"] == 20
    assert is_next_midnight(fresh["generations"]["resets_at"])

    await make_clone_model(session, user, [])
    await make_clone_model(session, user, [], status="ready")
    await make_clone_model(session, user, [], status="failed")  # a failure gives its slot back
    await add_generations(session, user, 2)
    await add_generations(session, user, 1, status=JobStatus.failed.value)
    await add_generations(session, user, 1, created_at=utcnow() - timedelta(days=1))
    used = await by_name(client, auth)
    assert (used["models"]["used"], used["models"]["remaining"]) == (2, 3)
    assert (used["generations"]["used"], used["generations"]["remaining"]) == (2, 18)
    assert_error(await client.get(QUOTAS), 401, "unauthenticated")


async def test_pro_and_unlisted_plans(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, container: Container
) -> None:
    pro = await by_name(client, bearer(container, await make_user(session, settings, plan="pro")))
    assert (pro["models"]["total"], pro["models"]["remaining"]) == (None, None)
    assert pro["generations"]["total"] == 100
    team = await by_name(client, bearer(container, await make_user(session, settings, plan="team")))
    assert (team["models"]["total"], team["generations"]["total"]) == (5, 20)


async def test_past_the_lifetime_quota_a_plan_is_required(
    session: AsyncSession, settings: Settings, user: User
) -> None:
    for _ in range(4):
        await make_clone_model(session, user, [])
    await quotas.require(session, settings, user, quotas.QuotaName.models)  # the fifth fits
    await make_clone_model(session, user, [])
    with pytest.raises(quotas.PlanRequired) as refused:
        await quotas.require(session, settings, user, quotas.QuotaName.models)
    assert (refused.value.status_code, refused.value.code) == (403, "plan_required")
    assert refused.value.extra["plans"] == ["pro"]


async def test_past_the_daily_quota_it_is_429_until_midnight(
    session: AsyncSession, settings: Settings, user: User
) -> None:
    await add_generations(session, user, 19)
    await quotas.require(session, settings, user, quotas.QuotaName.generations)
    with pytest.raises(quotas.QuotaExceeded) as refused:
        await quotas.require(session, settings, user, quotas.QuotaName.generations, amount=2)
    error = refused.value
    assert (error.status_code, error.code) == (429, "quota_exceeded")
    assert is_next_midnight(error.extra["resets_at"])
    assert 1 <= int(error.headers["Retry-After"]) <= 24 * 3600


async def test_a_zero_quota_is_a_feature_the_plan_lacks(
    database_url: str, session: AsyncSession, user: User
) -> None:
    settings = make_settings(database_url=database_url, clone_generation_daily_quotas="free=0,pro=100")
    with pytest.raises(quotas.PlanRequired) as refused:
        await quotas.require(session, settings, user, quotas.QuotaName.generations)
    assert refused.value.extra["plans"] == ["pro"]


def test_quota_settings_are_read_from_plan_pairs() -> None:
    settings = make_settings(clone_model_quotas="free=2, Pro=unlimited, team=10")
    assert settings.clone_model_quotas == {"free": 2, "pro": None, "team": 10}
    for bad in ("pro=5", "free=-1", "free", "free=lots"):
        with pytest.raises(ValidationError):
            make_settings(clone_model_quotas=bad)

"""GET /admin/analytics/summary against figures counted by hand on a seeded fortnight (tests/support/
analytics.py), on every configured database: the bucket expressions and the percentiles are per dialect."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from tests.factories import bearer, make_user
from tests.support.analytics import EXPECTED_TOTALS, PERIOD, seed_march
from tests.support.http import assert_error

URL = "/api/v1/admin/analytics/summary"


@pytest.fixture
async def admin_headers(session: AsyncSession, settings: Settings, container: Container) -> dict[str, str]:
    return bearer(container, await make_user(session, settings, role="admin"))


def _approx(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures with their ratios compared to the float precision they are computed in."""
    users = figures["users"]
    return {
        **figures,
        "users": {**users, "conversion": pytest.approx(users["conversion"]) if users["conversion"] else None},
    }


async def test_weekly_summary_matches_the_hand_counted_figures(
    client: httpx.AsyncClient, session: AsyncSession, admin_headers: dict[str, str]
) -> None:
    await seed_march(session)
    response = await client.get(URL, headers=admin_headers, params={**PERIOD, "granularity": "week"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["granularity"] == "week"
    assert body["totals"] == _approx(EXPECTED_TOTALS)

    first, second = body["buckets"]
    assert (first["start"], second["start"]) == ("2025-03-03", "2025-03-10")
    assert first["revenue"] == [
        {
            "provider": "razorpay",
            "currency": "INR",
            "orders": 1,
            "gross": 49_900,
            "refunded": 49_900,
            "net": 0,
        },
        {"provider": "stripe", "currency": "USD", "orders": 1, "gross": 999, "refunded": 0, "net": 999},
    ]
    assert second["revenue"] == [
        {"provider": "stripe", "currency": "USD", "orders": 1, "gross": 1_999, "refunded": 500, "net": 1_499}
    ]
    assert first["orders_by_status"] == {"paid": 1, "refunded": 1}
    assert second["orders_by_status"] == {"failed": 1, "paid": 1}
    assert first["credits"] == {
        "sold": 150.0,
        "granted": 20.0,
        "spent": 1.0,
        "refunded": 50.0,
        "removed_by_admins": 0.0,
        "movements": 9,
    }
    assert second["credits"] == {
        "sold": 0.0,
        "granted": 12.5,
        "spent": 0.0,
        "refunded": 3.0,
        "removed_by_admins": 0.5,
        "movements": 4,
    }
    assert first["jobs"] == [
        {
            "kind": "remove_background",
            "total": 4,
            "by_status": {"COMPLETED": 3, "FAILED": 1},
            "failure_rate": 0.25,
            "p50_ms": 200.0,
            "p95_ms": 290.0,  # 100, 200, 300: 0.95 x 2 = 1.9 -> 200 + 0.9 x 100
        }
    ]
    assert second["jobs"] == [
        {
            "kind": "remove_background",
            "total": 1,
            "by_status": {"COMPLETED": 1},
            "failure_rate": 0.0,
            "p50_ms": 1000.0,
            "p95_ms": 1000.0,
        },
        {
            "kind": "vectorize",
            "total": 2,
            "by_status": {"COMPLETED": 1, "PENDING": 1},
            "failure_rate": 0.0,
            "p50_ms": 50.0,
            "p95_ms": 50.0,
        },
    ]
    assert first["users"] == {"new": 2, "active": 2, "paying": 2, "conversion": 1.0}
    assert second["users"] == {"new": 1, "active": 2, "paying": 1, "conversion": 1.0}


async def test_daily_and_monthly_buckets(
    client: httpx.AsyncClient, session: AsyncSession, admin_headers: dict[str, str]
) -> None:
    await seed_march(session)
    daily = (await client.get(URL, headers=admin_headers, params={**PERIOD, "granularity": "day"})).json()
    days = {bucket["start"]: bucket for bucket in daily["buckets"]}
    # Every day of the period is listed, quiet ones too, in order.
    assert list(days) == [f"2025-03-{day:02d}" for day in range(3, 17)]
    assert days["2025-03-03"]["credits"]["sold"] == 100.0
    assert days["2025-03-05"]["credits"]["spent"] == 0.0  # reserved and released the same day
    assert days["2025-03-05"]["jobs"][0]["by_status"] == {"COMPLETED": 1, "FAILED": 1}
    assert days["2025-03-08"]["users"] == {"new": 0, "active": 0, "paying": 0, "conversion": None}
    assert daily["totals"] == _approx(EXPECTED_TOTALS)

    # A month cut by the period: one bucket, starting on the first, holding the period's figures only.
    monthly = await client.get(URL, headers=admin_headers, params={**PERIOD, "granularity": "month"})
    (march,) = monthly.json()["buckets"]
    assert march["start"] == "2025-03-01"
    assert _approx({key: march[key] for key in EXPECTED_TOTALS}) == EXPECTED_TOTALS


async def test_a_period_given_in_another_time_zone_is_the_same_instant(
    client: httpx.AsyncClient, session: AsyncSession, admin_headers: dict[str, str]
) -> None:
    await seed_march(session)
    params = {"from": "2025-03-03T02:00:00+02:00", "to": "2025-03-17T02:00:00+02:00", "granularity": "week"}
    body = (await client.get(URL, headers=admin_headers, params=params)).json()
    assert body["period_start"].startswith("2025-03-03T00:00:00")
    assert body["totals"] == _approx(EXPECTED_TOTALS)


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({**PERIOD, "granularity": "hour"}, 422, "validation_error"),
        ({"from": PERIOD["to"], "to": PERIOD["from"]}, 422, "invalid_period"),
        ({"from": PERIOD["from"], "to": PERIOD["from"]}, 422, "invalid_period"),
        ({"from": "2025-03-03T00:00:00", "to": PERIOD["to"]}, 422, "validation_error"),  # no offset
        ({"from": "yesterday"}, 422, "validation_error"),
        # 401 days at most 400 buckets by default: refused, and fine by the month
        (
            {"from": "2024-01-01T00:00:00Z", "to": "2025-02-05T00:00:00Z", "granularity": "day"},
            422,
            "invalid_period",
        ),
    ],
)
async def test_bad_periods_and_granularities_are_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str], params: dict[str, str], status: int, error: str
) -> None:
    assert_error(await client.get(URL, headers=admin_headers, params=params), status, error)


async def test_a_long_period_is_fine_by_the_month(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    params = {"from": "2024-01-01T00:00:00Z", "to": "2025-02-05T00:00:00Z", "granularity": "month"}
    response = await client.get(URL, headers=admin_headers, params=params)
    assert response.status_code == 200, response.text
    assert len(response.json()["buckets"]) == 14

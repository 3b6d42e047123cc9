"""GET /admin/analytics/summary: a period's revenue, orders, credits, jobs and users, bucketed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from app.db.base import utcnow
from app.dependencies import SessionDep, SettingsDep
from app.schemas.analytics import AnalyticsSummaryOut, BucketOut, FiguresOut
from app.services import analytics
from app.services.periods import period_ending

router = APIRouter()


def _figures(figures: analytics.Figures) -> dict[str, Any]:
    return {
        "revenue": [
            {
                "provider": line.provider,
                "currency": line.currency,
                "orders": line.orders,
                "gross": line.gross,
                "refunded": line.refunded,
                "net": line.net,
            }
            for line in sorted(figures.revenue.values(), key=lambda line: (line.provider, line.currency))
        ],
        "orders_by_status": dict(sorted(figures.orders_by_status.items())),
        "credits": figures.credits.as_credits(),
        "jobs": [
            {
                "kind": job.kind,
                "total": job.total,
                "by_status": dict(sorted(job.by_status.items())),
                "failure_rate": job.failure_rate,
                "p50_ms": job.p50_ms,
                "p95_ms": job.p95_ms,
            }
            for job in sorted(figures.jobs.values(), key=lambda job: job.kind)
        ],
        "users": {
            "new": figures.users.new,
            "active": figures.users.active,
            "paying": figures.users.paying,
            "conversion": figures.users.conversion,
        },
    }


@router.get("/analytics/summary", response_model=AnalyticsSummaryOut)
async def analytics_summary(
    session: SessionDep,
    settings: SettingsDep,
    from_: Annotated[
        AwareDatetime | None, Query(alias="from", description="inclusive, ISO 8601; default 30 days ago")
    ] = None,
    to: Annotated[AwareDatetime | None, Query(description="exclusive, ISO 8601; default now")] = None,
    granularity: Annotated[analytics.Granularity, Query()] = analytics.Granularity.day,
) -> AnalyticsSummaryOut:
    """Buckets are UTC calendar days, ISO weeks (from Monday) or months; the first and last may be cut
    by the period. Money is in minor units of its currency, credits in decimals."""
    until = to or utcnow()
    period = period_ending(from_, until, 30)
    result = await analytics.summary(session, period, granularity, settings.analytics_max_buckets)
    buckets: list[BucketOut] = [
        BucketOut.model_validate({"start": start, **_figures(figures)})
        for start, figures in result.buckets.items()
    ]
    return AnalyticsSummaryOut(
        period_start=period.since,
        period_end=period.until,
        granularity=granularity.value,
        totals=FiguresOut.model_validate(_figures(result.totals)),
        buckets=buckets,
    )

"""Shapes of GET /admin/analytics/summary. Money in minor units of its currency; credits as decimals."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import Field

from app.schemas.base import Schema
from app.schemas.users import Credits


class RevenueOut(Schema):
    provider: str
    currency: str
    orders: int
    gross: int = Field(description="Paid, minor units.")
    refunded: int = Field(description="Refunded of those payments since, minor units.")
    net: int


class CreditFiguresOut(Schema):
    sold: Credits
    granted: Credits
    spent: Credits
    refunded: Credits
    removed_by_admins: Credits
    movements: int


class JobFiguresOut(Schema):
    kind: str
    total: int
    by_status: dict[str, int]
    failure_rate: float | None = Field(description="failed / (completed + failed)")
    p50_ms: float | None
    p95_ms: float | None


class UserFiguresOut(Schema):
    new: int
    active: int = Field(description="Distinct users who submitted a job.")
    paying: int = Field(description="Distinct users with an order paid.")
    conversion: float | None = Field(description="paying / new")


class FiguresOut(Schema):
    revenue: list[RevenueOut]
    orders_by_status: dict[str, int]
    credits: CreditFiguresOut
    jobs: list[JobFiguresOut]
    users: UserFiguresOut


class BucketOut(FiguresOut):
    start: date = Field(description="First day (UTC) of the day, ISO week or month.")


class AnalyticsSummaryOut(Schema):
    period_start: datetime
    period_end: datetime
    granularity: str
    totals: FiguresOut
    buckets: list[BucketOut]

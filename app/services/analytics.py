"""The admin analytics summary: a period's money, credits, jobs and users, per day, week or month.

Every figure comes from an aggregate query (app/repositories/analytics.py); this module only files the
grouped rows into buckets. Figures that add up (sums, counts) are totalled from the buckets; those that do
not (distinct users, percentiles) are asked of the database once more for the whole period.

Definitions:
- revenue: orders paid in the bucket (by `paid_at`), per provider and currency, minor units; `refunded`
  is what was later refunded of those payments, `net` = gross - refunded.
- orders by status: orders created in the bucket, by their current status.
- credits: `sold` = purchases and subscription grants; `granted` = signup bonuses and positive admin
  adjustments; `spent` = credits held by reservations less those released (jobs and paid design work);
  `refunded` = credits taken back by refunds and chargebacks; `removed_by_admins` = negative adjustments.
- jobs: created in the bucket, by kind and status; failure rate = failed / (completed + failed);
  p50/p95 of `time_taken_ms` over the completed ones.
- users: `new` = accounts created in the bucket; `active` = distinct users who submitted a job;
  `paying` = distinct users with an order paid; `conversion` = paying / new (None without new users).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import JobStatus, LedgerReason
from app.repositories.analytics import AnalyticsRepository, Granularity, Period, as_date
from app.services.credits import to_credits
from app.services.periods import InvalidPeriod

__all__ = ["Granularity", "Summary", "bucket_starts", "summary"]


@dataclass
class RevenueLine:
    provider: str
    currency: str
    orders: int = 0
    gross: int = 0
    refunded: int = 0

    @property
    def net(self) -> int:
        return self.gross - self.refunded


@dataclass
class CreditFigures:
    """Millicredits inside; `credits` gives the API's decimals."""

    sold: int = 0
    granted: int = 0
    spent: int = 0
    refunded: int = 0
    removed_by_admins: int = 0
    movements: int = 0

    def as_credits(self) -> dict[str, Decimal | int]:
        return {
            "sold": to_credits(self.sold),
            "granted": to_credits(self.granted),
            "spent": to_credits(self.spent),
            "refunded": to_credits(self.refunded),
            "removed_by_admins": to_credits(self.removed_by_admins),
            "movements": self.movements,
        }


@dataclass
class JobFigures:
    kind: str
    by_status: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p95_ms: float | None = None

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def failure_rate(self) -> float | None:
        failed = self.by_status.get(JobStatus.failed.value, 0)
        finished = failed + self.by_status.get(JobStatus.completed.value, 0)
        return failed / finished if finished else None


@dataclass
class UserFigures:
    new: int = 0
    active: int = 0
    paying: int = 0

    @property
    def conversion(self) -> float | None:
        return self.paying / self.new if self.new else None


@dataclass
class Figures:
    revenue: dict[tuple[str, str], RevenueLine] = field(default_factory=dict)
    orders_by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    credits: CreditFigures = field(default_factory=CreditFigures)
    jobs: dict[str, JobFigures] = field(default_factory=dict)
    users: UserFigures = field(default_factory=UserFigures)

    def revenue_line(self, provider: str, currency: str) -> RevenueLine:
        return self.revenue.setdefault((provider, currency), RevenueLine(provider, currency))

    def job(self, kind: str) -> JobFigures:
        return self.jobs.setdefault(kind, JobFigures(kind))


@dataclass
class Summary:
    period: Period
    granularity: Granularity
    buckets: dict[date, Figures]
    totals: Figures


def bucket_starts(period: Period, granularity: Granularity, limit: int) -> list[date]:
    """The first day of every bucket that overlaps the period, refused past `limit` buckets."""
    first = period.since.date()
    if granularity is Granularity.week:
        first -= timedelta(days=first.weekday())
    elif granularity is Granularity.month:
        first = first.replace(day=1)
    last_day = (period.until - timedelta(microseconds=1)).date()  # `until` is exclusive
    starts: list[date] = []
    current = first
    while current <= last_day:
        starts.append(current)
        if len(starts) > limit:
            raise InvalidPeriod(
                f"The period holds more than {limit} {granularity.value}s: choose a coarser granularity."
            )
        current = _next(current, granularity)
    return starts


def _next(day: date, granularity: Granularity) -> date:
    if granularity is Granularity.day:
        return day + timedelta(days=1)
    if granularity is Granularity.week:
        return day + timedelta(days=7)
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


_CREDIT_RULES: dict[str, tuple[str, int, int]] = {
    # reason: (figure, weight of the positive sum, weight of the negative sum)
    LedgerReason.purchase.value: ("sold", 1, 0),
    LedgerReason.subscription.value: ("sold", 1, 0),
    LedgerReason.signup_bonus.value: ("granted", 1, 0),
    LedgerReason.job_reserve.value: ("spent", 0, -1),
    LedgerReason.job_release.value: ("spent", -1, 0),
    # A capture row is 0, or the part of a reservation a partly delivered job gives back.
    LedgerReason.job_capture.value: ("spent", -1, 0),
    LedgerReason.refund.value: ("refunded", 0, -1),
    LedgerReason.chargeback.value: ("refunded", 0, -1),
}


def _add_ledger(credits: CreditFigures, reason: str, movements: int, positive: int, negative: int) -> None:
    credits.movements += movements
    if reason == LedgerReason.admin_adjustment.value:
        credits.granted += positive
        credits.removed_by_admins -= negative
        return
    rule = _CREDIT_RULES.get(reason)
    if rule is None:
        return
    name, positive_weight, negative_weight = rule
    setattr(credits, name, getattr(credits, name) + positive_weight * positive + negative_weight * negative)


def _int(value: Any) -> int:
    # MariaDB's SUM of BIGINT is DECIMAL; an empty SUM is NULL.
    return int(value or 0)


def _float(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


async def summary(
    session: AsyncSession, period: Period, granularity: Granularity, max_buckets: int
) -> Summary:
    starts = bucket_starts(period, granularity, max_buckets)
    buckets: dict[date, Figures] = {start: Figures() for start in starts}
    totals = Figures()
    repository = AnalyticsRepository(session)

    def bucket(value: Any) -> Figures:
        return buckets.setdefault(as_date(value), Figures())

    for when, provider, currency, orders, gross, refunded in await repository.revenue(period, granularity):
        for figures in (bucket(when), totals):
            line = figures.revenue_line(provider, currency)
            line.orders += orders
            line.gross += _int(gross)
            line.refunded += _int(refunded)

    for when, status, orders in await repository.orders_by_status(period, granularity):
        for figures in (bucket(when), totals):
            figures.orders_by_status[status] += orders

    for when, reason, movements, positive, negative in await repository.ledger_by_reason(period, granularity):
        for figures in (bucket(when), totals):
            _add_ledger(figures.credits, reason, movements, _int(positive), _int(negative))

    for when, kind, status, jobs in await repository.jobs_by_status(period, granularity):
        for figures in (bucket(when), totals):
            by_status = figures.job(kind).by_status
            by_status[status] = by_status.get(status, 0) + jobs

    for when, kind, p50, p95 in await repository.job_durations(period, granularity):
        job = bucket(when).job(kind)
        job.p50_ms, job.p95_ms = _float(p50), _float(p95)
    for _, kind, p50, p95 in await repository.job_durations(period, None):
        job = totals.job(kind)
        job.p50_ms, job.p95_ms = _float(p50), _float(p95)

    for when, users in await repository.new_users(period, granularity):
        bucket(when).users.new += users
        totals.users.new += users
    for when, users in await repository.active_users(period, granularity):
        bucket(when).users.active = users
    for when, users in await repository.paying_users(period, granularity):
        bucket(when).users.paying = users
    for _, users in await repository.active_users(period, None):
        totals.users.active = users
    for _, users in await repository.paying_users(period, None):
        totals.users.paying = users

    return Summary(period, granularity, dict(sorted(buckets.items())), totals)

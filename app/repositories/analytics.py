"""Aggregate queries of the admin analytics: every figure is computed by the database (GROUP BY over a
period), and only the grouped rows come back.

Buckets are calendar days, ISO weeks (starting Monday) or months in UTC, computed per dialect (see
`bucket_start`). Percentiles of job durations are PostgreSQL's `percentile_cont`; SQLite and MariaDB,
which have no ordered-set aggregates, get the same linear interpolation from window functions
(ROW_NUMBER and COUNT over the group pick the two neighbouring values; see `_PortablePercentiles`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Date, Select, and_, case, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import CreditLedgerEntry, Job, JobStatus, Order, User


class Granularity(StrEnum):
    day = "day"
    week = "week"
    month = "month"


def bucket_start(dialect: str, column: Any, granularity: Granularity) -> ColumnElement[Any]:
    """The first day (UTC) of the bucket holding `column`'s timestamp, as a date or 'YYYY-MM-DD' text."""
    if dialect == "postgresql":
        # timestamptz -> UTC wall clock, truncated; ISO weeks start on Monday in date_trunc too.
        utc = func.timezone(_text("UTC"), column)
        return cast(func.date_trunc(_text(granularity.value), utc), Date)
    if dialect == "sqlite":
        # Stored as 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC.
        if granularity is Granularity.day:
            return func.date(column)
        if granularity is Granularity.week:
            # The Monday on or before the day: back six days, then forward to the next Monday.
            return func.date(column, _text("-6 days"), _text("weekday 1"))
        return func.date(column, _text("start of month"))
    if dialect in ("mysql", "mariadb"):
        day = func.date(column)
        if granularity is Granularity.day:
            return day
        if granularity is Granularity.week:
            return func.subdate(day, func.weekday(column))  # WEEKDAY: Monday is 0
        return func.date_format(column, _text("%Y-%m-01"))
    raise ValueError(f"no bucket expression for {dialect!r}")


def _text(constant: str) -> ColumnElement[Any]:
    """A string constant written into the SQL rather than bound: the bucket expression appears in SELECT
    and in GROUP BY, and PostgreSQL only sees them as the same expression when their text is identical
    (two bound parameters are two different expressions to it). Only our own constants come here."""
    return literal_column("'" + constant.replace("'", "''") + "'")


def as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class Period:
    since: datetime  # inclusive
    until: datetime  # exclusive


# Percentiles reported for job durations, in hundredths (integer arithmetic works alike everywhere).
PERCENTILES = (50, 95)


class AnalyticsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.dialect = session.bind.dialect.name if session.bind is not None else "sqlite"

    def _bucket(self, column: Any, granularity: Granularity | None) -> tuple[Any, list[Any]]:
        """The bucket column to select and what to group by for it. Without a granularity the whole
        period is one bucket named 'total' (for the figures that do not add up across buckets, such as
        distinct users and percentiles), and nothing is grouped for it."""
        if granularity is None:
            return literal_column("'total'").label("bucket"), []
        start = bucket_start(self.dialect, column, granularity)
        return start.label("bucket"), [start]

    async def _rows(self, statement: Select[Any]) -> list[Any]:
        return list((await self.session.execute(statement)).all())

    async def revenue(self, period: Period, granularity: Granularity | None) -> list[Any]:
        """(bucket, provider, currency, orders, gross, refunded) of orders paid in the period (minor units;
        refunds counted with the payment they took back)."""
        bucket, grouping = self._bucket(Order.paid_at, granularity)
        statement = (
            select(
                bucket,
                Order.provider,
                Order.currency,
                func.count(),
                func.sum(Order.amount),
                func.sum(Order.refunded_amount),
            )
            .where(Order.paid_at >= period.since, Order.paid_at < period.until)
            .group_by(*grouping, Order.provider, Order.currency)
        )
        return await self._rows(statement)

    async def orders_by_status(self, period: Period, granularity: Granularity | None) -> list[Any]:
        """(bucket, status, orders) of orders created in the period."""
        bucket, grouping = self._bucket(Order.created_at, granularity)
        statement = (
            select(bucket, Order.status, func.count())
            .where(Order.created_at >= period.since, Order.created_at < period.until)
            .group_by(*grouping, Order.status)
        )
        return await self._rows(statement)

    async def ledger_by_reason(self, period: Period, granularity: Granularity | None) -> list[Any]:
        """(bucket, reason, movements, sum of positive amounts, sum of negative amounts) in millicredits."""
        bucket, grouping = self._bucket(CreditLedgerEntry.created_at, granularity)
        amount = CreditLedgerEntry.amount
        statement = (
            select(
                bucket,
                CreditLedgerEntry.reason,
                func.count(),
                func.sum(case((amount > 0, amount), else_=0)),
                func.sum(case((amount < 0, amount), else_=0)),
            )
            .where(CreditLedgerEntry.created_at >= period.since, CreditLedgerEntry.created_at < period.until)
            .group_by(*grouping, CreditLedgerEntry.reason)
        )
        return await self._rows(statement)

    async def jobs_by_status(self, period: Period, granularity: Granularity | None) -> list[Any]:
        """(bucket, kind, status, jobs) of jobs created in the period."""
        bucket, grouping = self._bucket(Job.created_at, granularity)
        statement = (
            select(bucket, Job.kind, Job.status, func.count())
            .where(Job.created_at >= period.since, Job.created_at < period.until)
            .group_by(*grouping, Job.kind, Job.status)
        )
        return await self._rows(statement)

    async def job_durations(self, period: Period, granularity: Granularity | None) -> list[Any]:
        """(bucket, kind, p50 ms, p95 ms) of the completed jobs created in the period, interpolated
        linearly between neighbouring values (PostgreSQL's percentile_cont)."""
        in_period = and_(
            Job.created_at >= period.since,
            Job.created_at < period.until,
            Job.status == JobStatus.completed.value,
            Job.time_taken_ms.is_not(None),
        )
        bucket, grouping = self._bucket(Job.created_at, granularity)
        if self.dialect == "postgresql":
            percentiles = [
                func.percentile_cont(share / 100).within_group(Job.time_taken_ms) for share in PERCENTILES
            ]
            statement = select(bucket, Job.kind, *percentiles).where(in_period).group_by(*grouping, Job.kind)
            return await self._rows(statement)
        return await _PortablePercentiles(bucket, grouping, in_period).rows(self.session)

    async def new_users(self, period: Period, granularity: Granularity | None) -> list[Any]:
        bucket, grouping = self._bucket(User.created_at, granularity)
        statement = (
            select(bucket, func.count())
            .where(User.created_at >= period.since, User.created_at < period.until)
            .group_by(*grouping)
        )
        return await self._rows(statement)

    async def active_users(self, period: Period, granularity: Granularity | None) -> list[Any]:
        """(bucket, users) who submitted at least one job in the bucket."""
        bucket, grouping = self._bucket(Job.created_at, granularity)
        statement = (
            select(bucket, func.count(func.distinct(Job.user_id)))
            .where(Job.created_at >= period.since, Job.created_at < period.until)
            .group_by(*grouping)
        )
        return await self._rows(statement)

    async def paying_users(self, period: Period, granularity: Granularity | None) -> list[Any]:
        """(bucket, users) with at least one order paid in the bucket."""
        bucket, grouping = self._bucket(Order.paid_at, granularity)
        statement = (
            select(bucket, func.count(func.distinct(Order.user_id)))
            .where(Order.paid_at >= period.since, Order.paid_at < period.until)
            .group_by(*grouping)
        )
        return await self._rows(statement)


class _PortablePercentiles:
    """percentile_cont(p) for databases without it: number the group's values in order (ROW_NUMBER) next
    to the group's size n (COUNT OVER), then keep the values at the 0-based positions floor(p(n-1)) and
    the one after, and interpolate by the fraction p(n-1) - floor(p(n-1)). With p in hundredths the
    position is exact integer arithmetic: (P(n-1) - P(n-1) mod 100) / 100 divides evenly on every
    database, whatever its division operator."""

    def __init__(self, bucket: Any, grouping: list[Any], where: ColumnElement[bool]) -> None:
        self.bucket = bucket
        self.grouping = grouping
        self.where = where

    async def rows(self, session: AsyncSession) -> list[Any]:
        partition = [*self.grouping, Job.kind]
        ranked = (
            select(
                self.bucket,
                Job.kind.label("kind"),
                Job.time_taken_ms.label("value"),
                func.row_number().over(partition_by=partition, order_by=Job.time_taken_ms).label("rn"),
                func.count().over(partition_by=partition).label("n"),
            )
            .where(self.where)
            .subquery()
        )
        columns: list[ColumnElement[Any]] = []
        for share in PERCENTILES:
            scaled = share * (ranked.c.n - 1)
            remainder = scaled % 100
            lower = (scaled - remainder) / 100 + 1  # 1-based row number of the lower neighbour
            low_value = func.max(case((ranked.c.rn == lower, ranked.c.value)))
            high_value = func.max(case((ranked.c.rn == lower + 1, ranked.c.value)))
            fraction = func.max(remainder) / 100.0
            columns.append(low_value + fraction * (func.coalesce(high_value, low_value) - low_value))
        statement = select(ranked.c.bucket, ranked.c.kind, *columns).group_by(
            *([ranked.c.bucket] if self.grouping else []), ranked.c.kind
        )
        return list((await session.execute(statement)).all())

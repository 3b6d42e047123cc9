from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Integer, Table, case, func, insert, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.models import UsageRecord
from app.repositories.base import Executor, Repository


class utc_day(FunctionElement[Any]):
    """The UTC calendar day of a UTC timestamp column, on every backend."""

    inherit_cache = True


@compiles(utc_day)
def _utc_day_default(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite and MySQL/MariaDB store UTC without an offset: the stored day is the UTC day.
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # timestamptz -> date would use the session's TimeZone; ask for UTC explicitly.
    return f"date(timezone('UTC', {compiler.process(element.clauses, **kw)}))"


@dataclass(frozen=True)
class DailyUsage:
    day: str  # YYYY-MM-DD, UTC
    action: str
    count: int  # successful ones
    failed: int
    credits: int  # millicredits


_ADD = insert(cast(Table, UsageRecord.__table__))


async def append(db: Executor, row: dict[str, Any]) -> None:
    """One record, written as it is (one INSERT, no object: nothing reads it back here)."""
    await db.execute(_ADD, [row])


class UsageRepository(Repository[UsageRecord]):
    model = UsageRecord

    async def daily_sums(self, user_id: uuid.UUID, start: datetime, end: datetime) -> list[DailyUsage]:
        """Per UTC day and action, for records with start <= created_at < end."""
        day = utc_day(UsageRecord.created_at)
        statement = (
            select(
                day.label("day"),
                UsageRecord.action,
                func.sum(case((UsageRecord.success, 1), else_=0), type_=Integer).label("succeeded"),
                func.sum(case((UsageRecord.success, 0), else_=1), type_=Integer).label("failed"),
                func.coalesce(func.sum(UsageRecord.credits), 0).label("credits"),
            )
            .where(
                UsageRecord.user_id == user_id,
                UsageRecord.created_at >= start,
                UsageRecord.created_at < end,
            )
            .group_by(day, UsageRecord.action)
        )
        rows = (await self.session.execute(statement)).all()
        # SQLite answers the day as text, the others as a date: both print as YYYY-MM-DD.
        return sorted(
            (
                DailyUsage(
                    str(row.day)[:10], row.action, int(row.succeeded), int(row.failed), int(row.credits)
                )
                for row in rows
            ),
            key=lambda usage: (usage.day, usage.action),
        )

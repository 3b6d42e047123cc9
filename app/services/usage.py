"""Usage records: one row per credit-spending action (what, how many credits, on which object,
whether it succeeded), written in the transaction of the spend; and the user's sums by action and day."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.errors import AppError
from app.models import UsageAction
from app.repositories import usage as usage_rows
from app.repositories.base import Executor
from app.repositories.usage import DailyUsage, UsageRepository

# The longest period one summary covers.
MAX_DAYS = 366
DEFAULT_DAYS = 30


class InvalidPeriod(AppError):
    status_code = 422
    code = "invalid_period"
    default_detail = "The period is invalid."


async def record(
    db: Executor,
    *,
    user_id: uuid.UUID,
    action: UsageAction,
    credits: int,
    object_id: uuid.UUID | None = None,
    success: bool = True,
    at: datetime | None = None,
) -> None:
    """Record one action in the caller's transaction (the one that moved the credits, so both or
    neither are kept). `credits` is in millicredits (what the ledger moved; 0 for a failure); `at`
    is now unless the record is written after the fact (an import, a test's history)."""
    await usage_rows.append(db, row(user_id, action, credits, object_id, success, at or utcnow()))


def row(
    user_id: uuid.UUID,
    action: UsageAction,
    credits: int,
    object_id: uuid.UUID | None,
    success: bool,
    at: datetime,
) -> dict[str, Any]:
    """A usage record's row, for `record` or to be written along with a spend (`new_movements.spend_now`)."""
    if credits < 0:
        raise ValueError("usage credits are what was spent: never negative")
    return {
        "id": uuid.uuid4(),
        "user_id": user_id,
        "action": action.value,
        "credits": credits,
        "object_id": object_id,
        "success": success,
        "created_at": at,
    }


@dataclass(frozen=True)
class ActionTotal:
    action: str
    count: int
    failed: int
    credits: int


@dataclass(frozen=True)
class UsageSummary:
    start: date
    end: date  # inclusive
    days: list[DailyUsage]
    totals: list[ActionTotal]

    @property
    def credits(self) -> int:
        return sum(total.credits for total in self.totals)


def period(start: date | None, end: date | None, today: date | None = None) -> tuple[date, date]:
    """The inclusive UTC days asked for: by default the last 30 days up to today."""
    try:
        end = end or (start + timedelta(days=DEFAULT_DAYS - 1) if start else today or utcnow().date())
        start = start or end - timedelta(days=DEFAULT_DAYS - 1)
        end + timedelta(days=1)  # the query's exclusive bound
    except OverflowError:
        raise InvalidPeriod(
            "The period must lie within the years 1 to 9999 (UTC), before its last day."
        ) from None
    if start > end:
        raise InvalidPeriod("`from` is after `to`.")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidPeriod(f"A period covers at most {MAX_DAYS} days.")
    return start, end


async def summary(
    session: AsyncSession, user_id: uuid.UUID, start: date | None, end: date | None
) -> UsageSummary:
    first, last = period(start, end)
    days = await UsageRepository(session).daily_sums(
        user_id,
        datetime.combine(first, time.min, tzinfo=UTC),
        datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC),
    )
    totals: dict[str, ActionTotal] = {}
    for day in days:
        seen = totals.get(day.action, ActionTotal(day.action, 0, 0, 0))
        totals[day.action] = ActionTotal(
            day.action, seen.count + day.count, seen.failed + day.failed, seen.credits + day.credits
        )
    return UsageSummary(first, last, days, sorted(totals.values(), key=lambda total: total.action))

"""The period an admin figure or a report covers: [since, until) in UTC, checked before any query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.errors import AppError
from app.repositories.analytics import Period


class InvalidPeriod(AppError):
    status_code = 422
    code = "invalid_period"
    default_detail = "The period is invalid."


def checked_period(since: datetime, until: datetime, max_days: int | None = None) -> Period:
    if since >= until:
        raise InvalidPeriod("`from` must be earlier than `to`.")
    if max_days is not None and until - since > timedelta(days=max_days):
        raise InvalidPeriod(f"The period may cover at most {max_days} days.")
    return Period(since.astimezone(UTC), until.astimezone(UTC))

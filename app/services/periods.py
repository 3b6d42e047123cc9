"""The period an admin figure or a report covers: [since, until) in UTC, checked before any query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.errors import AppError
from app.repositories.analytics import Period


class InvalidPeriod(AppError):
    status_code = 422
    code = "invalid_period"
    default_detail = "The period is invalid."


OUT_OF_CALENDAR = "The period must lie within the years 1 to 9999 (UTC)."


def checked_period(since: datetime, until: datetime, max_days: int | None = None) -> Period:
    if since >= until:
        raise InvalidPeriod("`from` must be earlier than `to`.")
    if max_days is not None and until - since > timedelta(days=max_days):
        raise InvalidPeriod(f"The period may cover at most {max_days} days.")
    try:
        return Period(since.astimezone(UTC), until.astimezone(UTC))
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00, which is in the year 0 in UTC
        raise InvalidPeriod(OUT_OF_CALENDAR) from None


def period_ending(
    since: datetime | None, until: datetime, default_days: int, max_days: int | None = None
) -> Period:
    """[since, until), `since` being `default_days` before `until` unless given."""
    try:
        since = since or until - timedelta(days=default_days)
    except OverflowError:  # `until` is too close to the first day of the calendar
        raise InvalidPeriod(OUT_OF_CALENDAR) from None
    return checked_period(since, until, max_days)

"""Running a unit of work again after a database error that says "try again": an InnoDB deadlock or
lock wait timeout, a PostgreSQL deadlock or serialization failure, SQLite busy, a dropped connection, a
saturated pool. Each attempt must be a whole transaction of its own (a `session_scope()`), so that a
retry starts from a clean slate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = structlog.get_logger("app.db")

T = TypeVar("T")

# PostgreSQL's admin_shutdown, crash_shutdown and cannot_connect_now: the server is stopping, crashed or
# still starting (a restart); the next connection may well be served.
SERVER_GOING_AWAY_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
# PostgreSQL's serialization_failure and deadlock_detected, and the above.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"}) | SERVER_GOING_AWAY_SQLSTATES


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE a PostgreSQL error carries (SQLAlchemy's wrapper or the driver's own), else None."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) else None


def transient_database_error(exc: BaseException) -> bool:
    """True for errors after which the same unit of work may pass if run again."""
    if isinstance(exc, PoolTimeoutError | OperationalError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or sqlstate_of(exc) in _TRANSIENT_SQLSTATES
    return False


async def retry_transient(
    unit: Callable[[], Awaitable[T]], *, what: str, attempts: int = 4, base_delay_seconds: float = 0.05
) -> T:
    """`await unit()`, run again after a transient database error with a growing pause, up to `attempts`
    times; any other error, and the last transient one, reach the caller."""
    attempt = 1
    while True:
        try:
            return await unit()
        except Exception as exc:
            if attempt >= attempts or not transient_database_error(exc):
                raise
            delay = base_delay_seconds * 2 ** (attempt - 1)
            log.warning("db.retrying", what=what, attempt=attempt, error=type(exc).__name__, delay=delay)
            await asyncio.sleep(delay)
            attempt += 1

"""INSERT that skips a row whose unique key already exists, race-free, on every backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import Base


async def insert_if_absent(session: AsyncSession, model: type[Base], values: dict[str, Any]) -> bool:
    """True when the row was inserted, False when a row with the same unique key was already there.

    The database decides, not a prior SELECT: two concurrent inserts of one key cannot both win (the
    loser waits for the winner's commit, then skips), which closes the check-then-insert race.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(model).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(model).values(values).on_conflict_do_nothing()
    elif dialect == "mysql":
        # IGNORE also demotes other errors to warnings; callers insert complete, valid rows only.
        statement = mysql.insert(model).values(values).prefix_with("IGNORE")
    else:
        raise ValueError(f"unsupported database dialect {dialect!r}")
    result: CursorResult[Any] = await session.execute(statement)  # type: ignore[assignment]
    return result.rowcount == 1

"""INSERTs that skip a row whose unique key already exists, race-free, on every backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, select
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


async def insert_or_lock(
    session: AsyncSession, model: type[Base], values: dict[str, Any], key: tuple[str, ...]
) -> bool:
    """Like `insert_if_absent`, and either way the row (new or existing, found by the unique `key`
    columns) is locked for update by this transaction when it returns. `values` must hold the new row's
    primary key `id`.

    On MySQL/MariaDB a duplicate INSERT IGNORE takes a shared lock on the existing row; a later
    SELECT ... FOR UPDATE then needs to upgrade it, and two duplicates doing so at once deadlock. INSERT
    ... ON DUPLICATE KEY UPDATE (a no-op assignment) takes the exclusive lock at once instead, so a burst of
    duplicates queues on the row. Whether the row is ours is read back from its id: the affected-row
    count of a no-op update depends on the client's FOUND_ROWS flag.
    """
    table = model.__table__
    matches: ColumnElement[bool] = and_(*(table.c[name] == values[name] for name in key))
    if session.get_bind().dialect.name == "mysql":
        statement = mysql.insert(model).values(values)
        statement = statement.on_duplicate_key_update({key[0]: statement.inserted[key[0]]})
        await session.execute(statement)
        existing_id = await session.scalar(select(table.c.id).where(matches).with_for_update())
        return bool(existing_id == values["id"])
    if await insert_if_absent(session, model, values):
        return True
    await session.execute(select(table.c.id).where(matches).with_for_update())
    return False

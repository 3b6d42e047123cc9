"""`users.lock_open`: the account's row locked until the transaction ends, queried once per transaction."""

from __future__ import annotations

import gc

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.base import utcnow
from app.db.session import Database
from app.errors import NotFound
from app.models import User
from app.services import users as users_service
from tests.support.statements import recorded_statements, selects_from


async def test_a_user_locked_again_in_the_same_transaction_is_not_queried_again(
    session: AsyncSession, user: User, engine: AsyncEngine
) -> None:
    with recorded_statements(engine) as statements:
        first = await users_service.lock_open(session, user.id)
        again = await users_service.lock_open(session, user.id)
    assert first is again is user
    assert len(selects_from(statements, "users")) == 1


async def test_a_lock_is_remembered_with_its_row_even_when_nobody_else_keeps_that_row(
    database: Database, user: User, engine: AsyncEngine
) -> None:
    """The session's identity map holds rows weakly: a job's submission locks its owner by id and keeps
    no `User`, and a second lock in its transaction must not read the row again all the same."""
    async with database.session_scope() as session:
        with recorded_statements(engine) as statements:
            await users_service.lock_open(session, user.id)  # the row it returns is dropped at once
            gc.collect()
            await users_service.lock_open(session, user.id)
            session.expire_all()  # expired by the session: read again, under the lock
            await users_service.lock_open(session, user.id)
    assert len(selects_from(statements, "users")) == 2


@pytest.mark.parametrize("end", ["commit", "savepoint rollback"])
async def test_a_lock_whose_transaction_ended_is_taken_again(
    session: AsyncSession, user: User, engine: AsyncEngine, end: str
) -> None:
    """A new transaction holds no lock yet, and a rolled-back savepoint gives up those taken inside it."""
    if end == "commit":
        await users_service.lock_open(session, user.id)
        await session.commit()
    else:
        nested = await session.begin_nested()
        await users_service.lock_open(session, user.id)
        await nested.rollback()
    with recorded_statements(engine) as statements:
        await users_service.lock_open(session, user.id)
    assert len(selects_from(statements, "users")) == 1


async def test_an_account_closed_in_the_transaction_that_locked_it_is_refused(
    session: AsyncSession, user: User
) -> None:
    locked = await users_service.lock_open(session, user.id)
    locked.erased_at = utcnow()
    with pytest.raises(NotFound):
        await users_service.lock_open(session, user.id)

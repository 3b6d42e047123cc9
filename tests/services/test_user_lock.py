"""`users.lock_open`: the account's row locked until the transaction ends, queried once per transaction."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.base import utcnow
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

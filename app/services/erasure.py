"""The right to erasure as a whole: what the account had running is stopped and its credits released,
then the account itself is erased (`users.erase`). DELETE /users/me and Clerk's `user.deleted` both come
here."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.retry import retry_transient
from app.models import User
from app.repositories.users import UserRepository
from app.services import users
from app.services.clones import training


async def erase_account(session: AsyncSession, ctx: Container, user: User) -> None:
    # The account's row lock first: a training being created (it takes the same lock) has either
    # committed, and is cancelled here, or will find the account erased.
    locked = await UserRepository(session).lock(user.id)
    if locked is None or locked.erased_at is not None:
        return  # erased by a concurrent request meanwhile: nothing is left to do
    await training.cancel_for_erasure(session, ctx, user.id)
    await users.erase(session, ctx, user)


async def erase_account_alone(ctx: Container, user_id: uuid.UUID) -> None:
    """`erase_account` in a unit of work of its own, run again after a transient database error. On
    MySQL/MariaDB a job completing meanwhile may deadlock with it: the job holds its row and waits, through
    its usage record's foreign key, for the account's row, which the erasure holds while it waits for the
    job's. InnoDB ends one of the two; a completion is retried (`jobs.complete`), and so is this."""

    async def unit() -> None:
        async with ctx.database.session_scope() as session:
            user = await session.get(User, user_id)
            if user is not None:
                await erase_account(session, ctx, user)

    await retry_transient(unit, what="account.erase")

"""The right to erasure as a whole: what the account had running is stopped and its credits released,
then the account itself is erased (`users.erase`). DELETE /users/me and Clerk's `user.deleted` both come
here."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
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

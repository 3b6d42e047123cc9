from __future__ import annotations

import uuid

from sqlalchemy import exists, func, select

from app.models import RevokedAccessToken, User
from app.repositories.base import Repository


class UserRepository(Repository[User]):
    model = User

    async def lock(self, user_id: uuid.UUID) -> User | None:
        """The row, locked until the transaction ends, re-read even if the session had it already.

        On PostgreSQL FOR NO KEY UPDATE: it excludes every other lock of the row but KEY SHARE, the lock a
        foreign key to `users` takes when a row referring to it is inserted. FOR UPDATE excluded that too,
        and a payment (account row moved, then its tax invoice inserted) and a job submission (user locked,
        then the account row moved) for one account deadlocked (tests/services/test_account_lock.py), as
        did a job's capture and a submission (tests/services/test_job_lock_order.py).
        MySQL/MariaDB: FOR UPDATE (there, a foreign-key check's shared lock waits for it all the same);
        SQLite: the write lock the transaction holds."""
        return await self.session.scalar(
            select(User)
            .where(User.id == user_id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )

    async def get_with_token_revocation(self, user_id: uuid.UUID, jti: str) -> tuple[User, bool] | None:
        """The user and whether the access token `jti` was revoked (at logout), in one round trip: every
        request with a local access token asks both."""
        revoked = exists().where(RevokedAccessToken.jti == jti)
        row = (await self.session.execute(select(User, revoked).where(User.id == user_id))).first()
        return (row[0], bool(row[1])) if row is not None else None

    async def get_by_email(self, email: str) -> User | None:
        return await self.session.scalar(select(User).where(User.email == email))

    async def get_by_clerk_id(self, clerk_id: str) -> User | None:
        return await self.session.scalar(select(User).where(User.clerk_id == clerk_id))

    async def get_by_google_sub(self, google_sub: str) -> User | None:
        return await self.session.scalar(select(User).where(User.google_sub == google_sub))

    async def username_taken(self, username: str, by_other_than: object = None) -> bool:
        statement = select(func.count()).select_from(User).where(User.username == username)
        if by_other_than is not None:
            statement = statement.where(User.id != by_other_than)
        return bool(await self.session.scalar(statement))

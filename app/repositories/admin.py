"""Queries of the admin console: accounts with their balances."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import CreditAccount, User


class AdminUserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(
        self,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None = None,
        email: str | None = None,
        plan: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[User, int | None, int | None]]:
        """Accounts newest first (keyset on created_at, id), each with balance and reserved millicredits
        (None without a credit account). Erased accounts are left out: they name no one."""
        statement = (
            select(User, CreditAccount.balance, CreditAccount.reserved)
            .outerjoin(CreditAccount, CreditAccount.user_id == User.id)
            .where(User.erased_at.is_(None))
        )
        if email:
            statement = statement.where(User.email.contains(email.lower(), autoescape=True))
        if plan:
            statement = statement.where(User.plan == plan)
        if since is not None:
            statement = statement.where(User.created_at >= since)
        if until is not None:
            statement = statement.where(User.created_at < until)
        if after is not None:
            created_at, row_id = after
            statement = statement.where(
                or_(User.created_at < created_at, and_(User.created_at == created_at, User.id < row_id))
            )
        statement = statement.order_by(User.created_at.desc(), User.id.desc()).limit(limit)
        rows = await self.session.execute(statement)
        return [(user, balance, reserved) for user, balance, reserved in rows.all()]

"""Queries of the admin console: accounts with their balances, the hairstyle catalogue."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import CreditAccount, Style, User
from app.repositories.base import Repository


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


class AdminStyleRepository(Repository[Style]):
    model = Style

    async def list_all(self) -> list[Style]:
        """Every style, retired ones too, in catalogue order."""
        return list(await self.session.scalars(select(Style).order_by(Style.sort_order, Style.name)))

    async def name_taken(self, name: str, by_other_than: uuid.UUID | None = None) -> bool:
        # Case-insensitive on every database (MariaDB's collation already is).
        statement = select(Style.id).where(func.lower(Style.name) == name.lower())
        if by_other_than is not None:
            statement = statement.where(Style.id != by_other_than)
        return await self.session.scalar(statement.limit(1)) is not None

    async def remove(self, style: Style) -> None:
        await self.session.delete(style)
        await self.session.flush()

"""For tests whose requests really commit (races on every database): make rows outside the test's
rolled-back transaction, and delete them afterwards, children first."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.base import utcnow
from app.db.session import Database
from app.models import (
    CreditAccount,
    CreditDebt,
    CreditLedgerEntry,
    IdempotencyRecord,
    Order,
    Subscription,
    User,
    WebhookEvent,
)
from app.models.auth import OneTimeToken, RefreshToken
from app.services import users as users_service


async def committed_user(database: Database, settings: Settings) -> User:
    """A verified local user with its signup bonus, committed."""
    async with database.session_scope() as session:
        return await users_service.create_user(
            session, settings, email=f"{uuid.uuid4().hex[:12]}@example.com", email_verified_at=utcnow()
        )


async def cleanup(engine: AsyncEngine, user_ids: list[uuid.UUID], events: list[tuple[str, str]]) -> None:
    """Delete what a test committed for these users and these (provider, event id) inbox rows."""
    accounts = select(CreditAccount.id).where(CreditAccount.user_id.in_(user_ids))
    async with engine.begin() as connection:
        await connection.execute(delete(CreditDebt).where(CreditDebt.user_id.in_(user_ids)))
        await connection.execute(delete(CreditLedgerEntry).where(CreditLedgerEntry.account_id.in_(accounts)))
        await connection.execute(delete(CreditAccount).where(CreditAccount.user_id.in_(user_ids)))
        for provider, event_id in events:
            await connection.execute(
                delete(WebhookEvent).where(
                    WebhookEvent.provider == provider, WebhookEvent.event_id == event_id
                )
            )
        await connection.execute(delete(Subscription).where(Subscription.user_id.in_(user_ids)))
        await connection.execute(delete(Order).where(Order.user_id.in_(user_ids)))
        await connection.execute(delete(IdempotencyRecord).where(IdempotencyRecord.user_id.in_(user_ids)))
        await connection.execute(delete(RefreshToken).where(RefreshToken.user_id.in_(user_ids)))
        await connection.execute(delete(OneTimeToken).where(OneTimeToken.user_id.in_(user_ids)))
        await connection.execute(delete(User).where(User.id.in_(user_ids)))

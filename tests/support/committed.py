"""For tests whose requests really commit (races on every database): make rows outside the test's
rolled-back transaction, and delete them afterwards, children first."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.base import utcnow
from app.db.session import Database
from app.models import (
    ApiKey,
    AuditLog,
    BillingProfile,
    CreditAccount,
    CreditDebt,
    CreditLedgerEntry,
    IdempotencyRecord,
    Job,
    LedgerReason,
    Order,
    OutboxEmail,
    Subscription,
    TaxInvoice,
    Upload,
    User,
    WebhookEvent,
)
from app.models.auth import EmailCode, OneTimeToken, RefreshToken
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
        await connection.execute(
            delete(AuditLog).where(AuditLog.subject_id.in_(user_ids) | AuditLog.actor_id.in_(user_ids))
        )
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
        await connection.execute(delete(TaxInvoice).where(TaxInvoice.user_id.in_(user_ids)))
        await connection.execute(delete(BillingProfile).where(BillingProfile.user_id.in_(user_ids)))
        await connection.execute(delete(Order).where(Order.user_id.in_(user_ids)))
        await connection.execute(delete(IdempotencyRecord).where(IdempotencyRecord.user_id.in_(user_ids)))
        await connection.execute(delete(Job).where(Job.user_id.in_(user_ids)))
        await connection.execute(delete(Upload).where(Upload.user_id.in_(user_ids)))
        await connection.execute(delete(ApiKey).where(ApiKey.user_id.in_(user_ids)))
        await connection.execute(delete(OutboxEmail).where(OutboxEmail.user_id.in_(user_ids)))
        await connection.execute(delete(RefreshToken).where(RefreshToken.user_id.in_(user_ids)))
        await connection.execute(delete(OneTimeToken).where(OneTimeToken.user_id.in_(user_ids)))
        await connection.execute(delete(EmailCode).where(EmailCode.user_id.in_(user_ids)))
        await connection.execute(delete(User).where(User.id.in_(user_ids)))


async def leftovers(engine: AsyncEngine, user_id: uuid.UUID, events: list[tuple[str, str]]) -> int:
    """What `cleanup` should have deleted and did not: the user, their orders, these inbox rows."""
    async with engine.connect() as connection:
        users = await connection.scalar(select(func.count()).select_from(User).where(User.id == user_id))
        orders = await connection.scalar(
            select(func.count()).select_from(Order).where(Order.user_id == user_id)
        )
        inbox = await connection.scalar(
            select(func.count())
            .select_from(WebhookEvent)
            .where(WebhookEvent.event_id.in_([event_id for _, event_id in events]))
        )
    return int(users or 0) + int(orders or 0) + int(inbox or 0)


async def committed_movements(
    engine: AsyncEngine, user_id: uuid.UUID, reason: LedgerReason = LedgerReason.purchase
) -> tuple[int, list[int]]:
    """The user's committed balance, and the amounts of their ledger rows with this reason."""
    async with engine.connect() as connection:
        balance = await connection.scalar(
            select(CreditAccount.balance).where(CreditAccount.user_id == user_id)
        )
        moved = await connection.scalars(
            select(CreditLedgerEntry.amount)
            .join(CreditAccount, CreditAccount.id == CreditLedgerEntry.account_id)
            .where(CreditAccount.user_id == user_id, CreditLedgerEntry.reason == reason.value)
        )
        return int(balance or 0), list(moved)

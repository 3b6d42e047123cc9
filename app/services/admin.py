"""Administrators' actions on accounts."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import LedgerReason, User
from app.services import credits
from app.services import users as users_service

log = structlog.get_logger("app.admin")


async def adjust_credits(
    session: AsyncSession, admin: User, user_id: uuid.UUID, amount: int, note: str, key: str
) -> credits.Movement:
    """Add (amount > 0) or take (amount < 0) credits, recorded as an admin adjustment with who and why.
    Taking more than the balance is refused (402): the balance never goes negative."""
    target = await users_service.require_user(session, user_id)
    reference = f"admin:{admin.id}: {note}"[:255]
    if amount > 0:
        movement = await credits.grant(
            session, target.id, amount, LedgerReason.admin_adjustment, key, reference
        )
    else:
        movement = await credits.debit(
            session, target.id, -amount, LedgerReason.admin_adjustment, key, reference
        )
    log.info("admin.credits_adjusted", admin_id=str(admin.id), user_id=str(target.id), amount=amount)
    return movement

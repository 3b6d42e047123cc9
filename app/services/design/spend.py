"""Charging a design action: the credits and its usage record in one transaction, only on success; and
the LLM call, after which a failure is recorded (uncharged) and answered 502."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.session import Database, release_connection
from app.integrations.llm import LLMBadOutput, LLMError
from app.models import UsageAction
from app.repositories.base import Executor
from app.services import credits, new_movements, usage
from app.services.credits import InsufficientCredits
from app.services.design.errors import InvalidProviderOutput, ProviderFailed
from app.services.design.prompting import BrandIdea


async def require_balance(db: Executor, user_id: uuid.UUID, amount: int) -> None:
    """402 before any work when the balance cannot cover it (the spend itself checks again, atomically)."""
    if amount <= 0:
        return
    balance = await credits.stored_balance(db, user_id)
    if balance < amount:
        raise InsufficientCredits(amount, balance)


async def charge(
    db: Executor, user_id: uuid.UUID, action: UsageAction, amount: int, object_id: uuid.UUID
) -> int:
    """Spend `amount` millicredits for `object_id` and record the usage, in the caller's transaction.
    Returns the balance after. 402 (and the caller's transaction undone) when it does not cover it."""
    if amount > 0:
        key = f"{action.value}:{object_id}"
        record = usage.row(user_id, action, amount, object_id, success=True, at=utcnow())
        return await new_movements.spend_now(db, user_id, amount, key, reference=key, usage=record)
    # A free action: nothing moves.
    await usage.record(db, user_id=user_id, action=action, credits=0, object_id=object_id)
    return await credits.stored_balance(db, user_id)


async def charge_alone(
    database: Database, user_id: uuid.UUID, action: UsageAction, amount: int, object_id: uuid.UUID
) -> int:
    """`charge` as a unit of work of its own, for an action that wrote nothing else: one statement in
    autocommit where the backend writes it so (PostgreSQL), else a Core transaction."""
    postgresql = database.engine.dialect.name == "postgresql"
    async with database.autocommit() if postgresql and amount > 0 else database.writing() as connection:
        return await charge(connection, user_id, action, amount, object_id)


async def ask_llm(
    session: AsyncSession, user_id: uuid.UUID, action: UsageAction, ask: Callable[[], Awaitable[BrandIdea]]
) -> BrandIdea:
    """Await the model's answer without holding a database transaction (a call may take seconds, and
    on SQLite a transaction holds the write lock). A failure is recorded as an uncharged attempt and
    answered 502."""
    await release_connection(session)
    try:
        return await ask()
    except LLMError as exc:
        await usage.record(session, user_id=user_id, action=action, credits=0, success=False)
        if isinstance(exc, LLMBadOutput):
            raise InvalidProviderOutput(
                f"The language model's answer was unusable: {exc}.", exc.code
            ) from exc
        raise ProviderFailed(f"The language model failed: {exc}.", exc.code) from exc

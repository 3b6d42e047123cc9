"""Charging a design action: the credits and its usage record in one transaction, only on success; and
the LLM call, after which a failure is recorded (uncharged) and answered 502."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.session import release_connection
from app.integrations.llm import LLMBadOutput, LLMError
from app.models import UsageAction
from app.services import credits, usage
from app.services.credits import InsufficientCredits
from app.services.design.errors import InvalidProviderOutput, ProviderFailed
from app.services.design.prompting import BrandIdea


async def require_balance(session: AsyncSession, user_id: uuid.UUID, amount: int) -> None:
    """402 before any work when the balance cannot cover it (the spend itself checks again, atomically)."""
    if amount <= 0:
        return
    balance = await credits.balance_of(session, user_id)
    if balance < amount:
        raise InsufficientCredits(amount, balance)


async def charge(
    session: AsyncSession, user_id: uuid.UUID, action: UsageAction, amount: int, object_id: uuid.UUID
) -> int:
    """Spend `amount` millicredits for `object_id` and record the usage, in the session's transaction.
    Returns the balance after. 402 (and the caller's transaction undone) when it does not cover it."""
    if amount > 0:
        key = f"{action.value}:{object_id}"
        balance = await credits.spend_now(session, user_id, amount, key, reference=key)
    else:  # a free action: nothing moves
        balance = await credits.balance_of(session, user_id)
    await usage.record(session, user_id=user_id, action=action, credits=amount, object_id=object_id)
    return balance


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

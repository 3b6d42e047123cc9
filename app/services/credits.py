"""The credits ledger: with app/services/new_movements.py, the only code that moves a balance.

Every movement here is one savepoint holding a conditional UPDATE of the cached balance and one
append-only ledger row with a unique idempotency key; running a movement again with the same key changes
nothing and returns the first result. Amounts are millicredits (1 credit = 1000) inside, decimals at the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from functools import lru_cache

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.session import Database
from app.errors import AppError, Conflict
from app.models import MILLICREDITS_PER_CREDIT, CreditLedgerEntry, LedgerReason
from app.repositories import credits as credit_reads
from app.repositories.base import Executor
from app.repositories.credits import CreditRepository
from app.services.pagination import decode_cursor, encode_cursor

GRANT_REASONS = frozenset(
    {
        LedgerReason.signup_bonus,
        LedgerReason.purchase,
        LedgerReason.subscription,
        LedgerReason.admin_adjustment,
    }
)
# An administrator's correction goes either way; every other reason has one direction.
DEBIT_REASONS = frozenset({LedgerReason.admin_adjustment, LedgerReason.chargeback})
REFUND_REASONS = frozenset({LedgerReason.refund, LedgerReason.chargeback})


def to_millicredits(credits: Decimal) -> int:
    millis = credits * MILLICREDITS_PER_CREDIT
    if millis != millis.to_integral_value():
        raise ValueError("credits have at most 3 decimal places")
    return int(millis)


@lru_cache(maxsize=4096)
def to_credits(millicredits: int) -> Decimal:
    """Kept per amount (a Decimal is immutable): a gallery page shows the same few prices twenty times."""
    return (Decimal(millicredits) / MILLICREDITS_PER_CREDIT).quantize(Decimal("0.001"), rounding=ROUND_DOWN)


class InsufficientCredits(AppError):
    status_code = 402
    code = "insufficient_credits"

    def __init__(self, required: int, available: int) -> None:
        super().__init__(
            f"This needs {to_credits(required)} credits and {to_credits(available)} are available.",
            extra={"required": float(to_credits(required)), "available": float(to_credits(available))},
        )


class IdempotencyKeyConflict(Conflict):
    code = "idempotency_key_reused"
    default_detail = "This idempotency key was already used for a different movement."


@dataclass(frozen=True)
class Movement:
    entry: CreditLedgerEntry
    replayed: bool  # True when the key had been applied before: nothing moved this time


@dataclass(frozen=True)
class Refund:
    taken: Movement  # amount 0 when nothing was left to take
    shortfall: int  # millicredits that could not be clawed back because they were already spent


@dataclass(frozen=True)
class LedgerPage:
    entries: list[CreditLedgerEntry]
    next_cursor: str | None


async def ledger_page(
    session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None
) -> LedgerPage:
    """The user's movements, newest first."""
    before = decode_cursor(cursor) if cursor else None
    account = await CreditRepository(session).get_by_user(user_id)
    if account is None:
        return LedgerPage([], None)
    entries = await CreditRepository(session).list_entries(account.id, limit + 1, before)
    more = len(entries) > limit
    entries = entries[:limit]
    last = entries[-1] if more else None
    return LedgerPage(entries, encode_cursor(last.created_at, last.id) if last else None)


async def movement_exists(session: AsyncSession, key: str) -> bool:
    return await CreditRepository(session).get_entry_by_key(key) is not None


async def plan_and_balance(database: Database, user_id: uuid.UUID) -> tuple[str, int] | None:
    """The account's plan and balance (millicredits) in one round trip, what clients poll; None when
    the account is gone."""
    async with database.reading() as reader:
        return await credit_reads.plan_and_balance(reader, user_id)


async def balance_of(session: AsyncSession, user_id: uuid.UUID) -> int:
    account = await CreditRepository(session).get_by_user(user_id)
    return account.balance if account else 0


async def stored_balance(db: Executor, user_id: uuid.UUID) -> int:
    """The balance as the database holds it, read with a Core statement (on a session: what it flushed)."""
    return await credit_reads.balance_by_user(db, user_id)


def positive_amount(amount: int) -> int:
    if amount <= 0:
        raise ValueError(f"a movement amount must be positive, got {amount}")
    return amount


async def grant(
    session: AsyncSession,
    user_id: uuid.UUID,
    amount: int,
    reason: LedgerReason,
    key: str,
    reference: str | None = None,
) -> Movement:
    if reason not in GRANT_REASONS:
        raise ValueError(f"{reason} is not a grant")
    return await _move(session, user_id, positive_amount(amount), 0, reason, key, reference)


async def debit(
    session: AsyncSession,
    user_id: uuid.UUID,
    amount: int,
    reason: LedgerReason,
    key: str,
    reference: str | None = None,
) -> Movement:
    """Spend now, all or nothing: 402 when the balance does not cover it."""
    if reason not in DEBIT_REASONS:
        raise ValueError(f"{reason} is not a reason to take credits")
    return await _move(session, user_id, -positive_amount(amount), 0, reason, key, reference)


async def reserve(
    session: AsyncSession, user_id: uuid.UUID, amount: int, key: str, reference: str | None = None
) -> Movement:
    """Hold credits for a job: they leave the balance now and are captured or released later."""
    positive_amount(amount)
    return await _move(session, user_id, -amount, amount, LedgerReason.job_reserve, key, reference)


def settlement_key(reservation_key: str) -> str:
    return f"{reservation_key}:settle"


async def capture(session: AsyncSession, reservation_key: str, amount: int | None = None) -> Movement:
    """The job succeeded: the held credits are spent for good (a zero-amount row closes the hold). With
    `amount` (0 < amount <= held) only that much is spent and the rest goes back to the balance in the
    same row (a job that delivered part of what it was paid for)."""
    held = await _reservation(session, reservation_key)
    reserved = -held.amount
    if amount is not None and not 0 < amount <= reserved:
        raise ValueError(f"cannot capture {amount} of a reservation of {reserved}")
    returned = 0 if amount is None else reserved - amount
    return await _settle(session, held, LedgerReason.job_capture, balance_delta=returned)


async def release(session: AsyncSession, reservation_key: str) -> Movement:
    """The job failed or was abandoned: the held credits go back to the balance."""
    held = await _reservation(session, reservation_key)
    return await _settle(session, held, LedgerReason.job_release, balance_delta=-held.amount)


async def refund(
    session: AsyncSession,
    user_id: uuid.UUID,
    amount: int,
    key: str,
    reference: str | None = None,
    reason: LedgerReason = LedgerReason.refund,
) -> Refund:
    """Claw back up to `amount`, never below zero; the part already spent is returned as `shortfall`.
    A row is written even when nothing could be taken, so the key is spent either way."""
    positive_amount(amount)
    if reason not in REFUND_REASONS:
        raise ValueError(f"{reason} is not a refund reason")
    repository = CreditRepository(session)
    account = await repository.ensure_account(user_id)
    while True:
        existing = await repository.get_entry_by_key(key)
        if existing is not None:
            return _replayed_refund(existing, account.id, amount, reason)
        take = min(amount, await repository.current_balance(account.id))
        try:
            movement = await _move(session, user_id, -take, 0, reason, key, reference, requested=amount)
        except InsufficientCredits:
            continue  # spent concurrently between the read and the update: look again
        if movement.replayed:
            return _replayed_refund(movement.entry, account.id, amount, reason)
        return Refund(movement, shortfall=amount - take)


def _replayed_refund(
    existing: CreditLedgerEntry, account_id: uuid.UUID, amount: int, reason: LedgerReason
) -> Refund:
    if (
        existing.account_id != account_id
        or existing.reason != reason.value
        or existing.requested_amount != amount
    ):
        raise IdempotencyKeyConflict()
    return Refund(Movement(existing, replayed=True), shortfall=amount + existing.amount)


async def _reservation(session: AsyncSession, reservation_key: str) -> CreditLedgerEntry:
    held = await CreditRepository(session).get_entry_by_key(reservation_key)
    if held is None or held.reason != LedgerReason.job_reserve.value:
        raise ValueError(f"no reservation under key {reservation_key!r}")
    return held


async def _settle(
    session: AsyncSession, held: CreditLedgerEntry, reason: LedgerReason, balance_delta: int
) -> Movement:
    # Capture and release share one key, so a reservation is settled exactly once, whichever comes first.
    key = settlement_key(held.idempotency_key)
    account = await CreditRepository(session).get(held.account_id)
    assert account is not None
    movement = await _move(session, account.user_id, balance_delta, held.amount, reason, key, held.reference)
    if movement.entry.reason != reason.value:
        raise IdempotencyKeyConflict(f"The reservation was already settled as {movement.entry.reason}.")
    return movement


async def _move(
    session: AsyncSession,
    user_id: uuid.UUID,
    balance_delta: int,
    reserved_delta: int,
    reason: LedgerReason,
    key: str,
    reference: str | None,
    requested: int | None = None,
) -> Movement:
    repository = CreditRepository(session)
    account = await repository.ensure_account(user_id)
    existing = await repository.get_entry_by_key(key)
    if existing is not None:
        return _replay(existing, account.id, balance_delta, reason)
    try:
        async with session.begin_nested():
            balance = await repository.move(account.id, balance_delta, reserved_delta)
            if balance is None:
                # Refused. A concurrent copy of this very movement may have committed first (the
                # conditional UPDATE waited for it): then this call is its replay, not a shortage.
                raise _Refused()
            entry = await repository.add_entry(
                CreditLedgerEntry(
                    account_id=account.id,
                    amount=balance_delta,
                    reason=reason.value,
                    reference=reference,
                    idempotency_key=key,
                    balance_after=balance,
                    requested_amount=requested,
                )
            )
    except _Refused:
        existing = await repository.get_entry_by_key(key)
        if existing is not None:
            return _replay(existing, account.id, balance_delta, reason)
        raise InsufficientCredits(-balance_delta, await repository.current_balance(account.id)) from None
    except IntegrityError:
        # A concurrent movement with the same key committed first; ours was rolled back with the savepoint.
        existing = await repository.get_entry_by_key(key)
        if existing is None:
            raise
        return _replay(existing, account.id, balance_delta, reason)
    return Movement(entry, replayed=False)


class _Refused(Exception):
    """The conditional UPDATE matched no row (internal to `_move`)."""


def _replay(
    existing: CreditLedgerEntry, account_id: uuid.UUID, balance_delta: int, reason: LedgerReason
) -> Movement:
    """The movement under this key already happened. It must be the same movement: same account, and
    the same reason and amount (a settlement may have gone either way; a refund may have taken less)."""
    if existing.account_id != account_id:
        raise IdempotencyKeyConflict()
    settling = {existing.reason, reason.value} <= _SETTLE_REASONS
    if not settling and existing.reason != reason.value:
        raise IdempotencyKeyConflict()
    if not settling and reason is not LedgerReason.refund and existing.amount != balance_delta:
        raise IdempotencyKeyConflict()
    return Movement(existing, replayed=True)


_SETTLE_REASONS = {LedgerReason.job_capture.value, LedgerReason.job_release.value}

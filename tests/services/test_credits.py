"""The credits ledger: every movement, its idempotency, its invariants, its HTTP views and its races.

Amounts are millicredits (1 credit = 1000) unless a name says otherwise. Every account starts with the
signup bonus (10 credits with the default settings) and its one `signup_bonus` ledger row.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.errors import render_app_error
from app.models import CreditAccount, CreditLedgerEntry, LedgerReason, UsageAction, UsageRecord, User
from app.repositories.base import Executor
from app.services import credits, new_movements, usage
from app.services.credits import IdempotencyKeyConflict, InsufficientCredits, Movement
from app.services.design import spend as design_spend
from tests.conftest import make_settings
from tests.factories import bearer, make_user
from tests.support.databases import TestDatabase

BONUS = 10_000  # the default signup bonus, 10 credits


def test_the_signup_bonus_these_tests_count_on_is_the_default() -> None:
    assert credits.to_millicredits(make_settings().signup_bonus_credits) == BONUS


TRANSACTIONS = "/api/v1/credits/transactions"


# --- helpers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    balance: int
    reserved: int
    ledger_sum: int
    rows: int


async def state_of(session: AsyncSession, user_id: uuid.UUID) -> State:
    """Read from the database, never from the identity map (the balance moves by UPDATE statements)."""
    account = await session.scalar(
        select(CreditAccount)
        .where(CreditAccount.user_id == user_id)
        .execution_options(populate_existing=True)
    )
    assert account is not None
    total, rows = (
        await session.execute(
            select(func.coalesce(func.sum(CreditLedgerEntry.amount), 0), func.count()).where(
                CreditLedgerEntry.account_id == account.id
            )
        )
    ).one()
    state = State(int(account.balance), int(account.reserved), int(total), int(rows))
    assert state.balance == state.ledger_sum, state
    assert state.balance >= 0, state
    assert state.reserved >= 0, state
    return state


async def unsettled_reservations(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Millicredits held by reservations that have no capture/release row, derived from the ledger alone."""
    rows = (
        await session.execute(
            select(CreditLedgerEntry.idempotency_key, CreditLedgerEntry.reason, CreditLedgerEntry.amount)
            .join(CreditAccount, CreditAccount.id == CreditLedgerEntry.account_id)
            .where(CreditAccount.user_id == user_id)
        )
    ).all()
    settled = {key.removesuffix(":settle") for key, reason, _ in rows if reason in _SETTLEMENTS}
    return sum(
        -amount for key, reason, amount in rows if reason == LedgerReason.job_reserve and key not in settled
    )


_SETTLEMENTS = {LedgerReason.job_capture.value, LedgerReason.job_release.value}


async def row_by_key(session: AsyncSession, key: str) -> CreditLedgerEntry | None:
    return await session.scalar(
        select(CreditLedgerEntry)
        .where(CreditLedgerEntry.idempotency_key == key)
        .execution_options(populate_existing=True)
    )


async def assert_row(
    session: AsyncSession, movement: Movement, key: str, amount: int, reason: LedgerReason, balance_after: int
) -> None:
    assert movement.replayed is False
    row = await row_by_key(session, key)
    assert row is not None
    assert row.id == movement.entry.id
    assert (row.amount, row.reason, row.balance_after) == (amount, reason.value, balance_after)


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


# --- movements, one ledger row each ----------------------------------------------------------------------


async def test_a_new_account_holds_the_signup_bonus_as_its_only_row(
    session: AsyncSession, user: User
) -> None:
    assert await state_of(session, user.id) == State(BONUS, 0, BONUS, 1)
    row = await row_by_key(session, f"signup_bonus:{user.id}")
    assert row is not None
    assert (row.amount, row.reason, row.balance_after) == (BONUS, "signup_bonus", BONUS)


async def test_grant_adds_credits_with_one_positive_row(session: AsyncSession, user: User) -> None:
    k = key()
    movement = await credits.grant(session, user.id, 2_500, LedgerReason.purchase, k, reference="order_1")
    await assert_row(session, movement, k, 2_500, LedgerReason.purchase, BONUS + 2_500)
    assert movement.entry.reference == "order_1"
    assert await state_of(session, user.id) == State(BONUS + 2_500, 0, BONUS + 2_500, 2)


async def test_debit_spends_credits_with_one_negative_row(session: AsyncSession, user: User) -> None:
    k = key()
    movement = await credits.debit(session, user.id, 200, LedgerReason.chargeback, k)
    await assert_row(session, movement, k, -200, LedgerReason.chargeback, BONUS - 200)
    assert await state_of(session, user.id) == State(BONUS - 200, 0, BONUS - 200, 2)


async def test_debit_of_the_whole_balance_leaves_zero(session: AsyncSession, user: User) -> None:
    k = key()
    movement = await credits.debit(session, user.id, BONUS, LedgerReason.chargeback, k)
    await assert_row(session, movement, k, -BONUS, LedgerReason.chargeback, 0)
    assert await state_of(session, user.id) == State(0, 0, 0, 2)


async def test_reserve_then_capture_spends_the_held_credits(session: AsyncSession, user: User) -> None:
    k = key()
    reserved = await credits.reserve(session, user.id, 3_000, k, reference="job_1")
    await assert_row(session, reserved, k, -3_000, LedgerReason.job_reserve, BONUS - 3_000)
    assert await state_of(session, user.id) == State(BONUS - 3_000, 3_000, BONUS - 3_000, 2)

    captured = await credits.capture(session, k)
    # The capture row closes the hold and moves nothing: the credits left the balance at reserve time.
    await assert_row(session, captured, f"{k}:settle", 0, LedgerReason.job_capture, BONUS - 3_000)
    assert captured.entry.reference == "job_1"
    assert await state_of(session, user.id) == State(BONUS - 3_000, 0, BONUS - 3_000, 3)


# spend_now runs on the request's ORM session, or on a Core connection (a design charge on its own), where
# PostgreSQL writes it all in one statement: both must leave the same rows.
EXECUTORS = ["session", "connection"]


async def executor_of(session: AsyncSession, kind: str) -> Executor:
    return session if kind == "session" else await session.connection()


async def usage_of(session: AsyncSession, object_id: uuid.UUID) -> list[tuple[str, int, bool, datetime]]:
    rows = await session.execute(
        select(UsageRecord.action, UsageRecord.credits, UsageRecord.success, UsageRecord.created_at).where(
            UsageRecord.object_id == object_id
        )
    )
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_spend_now_writes_a_settled_hold_and_its_usage_in_one_step(
    session: AsyncSession, user: User, executor: str
) -> None:
    k, palette_id = key(), uuid.uuid4()
    # Written as given, its own moment included (here one that differs from the ledger rows').
    at = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    record = usage.row(user.id, UsageAction.palette, 3_000, palette_id, success=True, at=at)
    db = await executor_of(session, executor)
    balance = await new_movements.spend_now(db, user.id, 3_000, k, reference="palette:1", usage=record)
    assert balance == BONUS - 3_000
    hold, settlement = await row_by_key(session, k), await row_by_key(session, f"{k}:settle")
    assert hold is not None
    assert settlement is not None
    # The same two rows as reserve then capture: the credits leave with the hold, the capture closes it.
    assert (hold.amount, hold.reason, hold.balance_after) == (-3_000, "job_reserve", BONUS - 3_000)
    assert (settlement.amount, settlement.reason, settlement.balance_after) == (
        0,
        "job_capture",
        BONUS - 3_000,
    )
    assert hold.reference == settlement.reference == "palette:1"
    [(action, spent, success, moment)] = await usage_of(session, palette_id)
    assert (action, spent, success, moment) == ("palette", 3_000, True, at)
    assert await state_of(session, user.id) == State(BONUS - 3_000, 0, BONUS - 3_000, 3)
    assert await unsettled_reservations(session, user.id) == 0


@pytest.mark.parametrize("executor", [*EXECUTORS, "new hold"])
async def test_spend_now_or_a_new_hold_beyond_the_balance_is_402_and_writes_nothing(
    session: AsyncSession, user: User, executor: str
) -> None:
    k, palette_id = key(), uuid.uuid4()
    record = usage.row(user.id, UsageAction.palette, BONUS + 1, palette_id, success=True, at=utcnow())
    spend = (
        new_movements.hold_new(session, user.id, BONUS + 1, k)
        if executor == "new hold"
        else new_movements.spend_now(
            await executor_of(session, executor), user.id, BONUS + 1, k, usage=record
        )
    )
    with pytest.raises(InsufficientCredits) as raised:
        await spend
    assert raised.value.extra == {"required": 10.001, "available": 10.0}
    assert await row_by_key(session, k) is None
    assert await usage_of(session, palette_id) == []
    assert await state_of(session, user.id) == State(BONUS, 0, BONUS, 1)


async def test_a_partial_capture_spends_part_and_gives_the_rest_back_once(
    session: AsyncSession, user: User
) -> None:
    k = key()
    await credits.reserve(session, user.id, 3_000, k)
    captured = await credits.capture(session, k, 2_000)
    await assert_row(session, captured, f"{k}:settle", 1_000, LedgerReason.job_capture, BONUS - 2_000)
    assert await state_of(session, user.id) == State(BONUS - 2_000, 0, BONUS - 2_000, 3)
    # Settled once: a second capture replays it, a release is refused.
    assert (await credits.capture(session, k, 2_000)).replayed
    with pytest.raises(credits.IdempotencyKeyConflict):
        await credits.release(session, k)
    assert await state_of(session, user.id) == State(BONUS - 2_000, 0, BONUS - 2_000, 3)
    other = key()
    await credits.reserve(session, user.id, 1_000, other)
    for wrong in (0, 1_001):
        with pytest.raises(ValueError, match="cannot capture"):
            await credits.capture(session, other, wrong)


async def test_reserve_then_release_returns_the_credits(session: AsyncSession, user: User) -> None:
    k = key()
    await credits.reserve(session, user.id, 3_000, k)
    released = await credits.release(session, k)
    await assert_row(session, released, f"{k}:settle", 3_000, LedgerReason.job_release, BONUS)
    assert await state_of(session, user.id) == State(BONUS, 0, BONUS, 3)


# A job's hold is made under a key its new row names, and settled under that row's lock: the lean movements
# must leave exactly the rows the replaying ones leave.
SETTLEMENTS = {
    "capture": (None, LedgerReason.job_capture, 0, BONUS - 3_000),
    "partial capture": (2_000, LedgerReason.job_capture, 1_000, BONUS - 2_000),
    "release": (None, LedgerReason.job_release, 3_000, BONUS),
}


@pytest.mark.parametrize("settlement", list(SETTLEMENTS))
async def test_a_new_hold_and_its_settlement_leave_the_rows_reserve_and_settle_leave(
    session: AsyncSession, user: User, settlement: str
) -> None:
    k = key()
    assert await new_movements.hold_new(session, user.id, 3_000, k, reference="job:1") == BONUS - 3_000
    hold = await row_by_key(session, k)
    assert hold is not None
    assert (hold.amount, hold.reason, hold.balance_after, hold.reference) == (
        -3_000,
        "job_reserve",
        BONUS - 3_000,
        "job:1",
    )
    assert await state_of(session, user.id) == State(BONUS - 3_000, 3_000, BONUS - 3_000, 2)

    amount, reason, returned, after = SETTLEMENTS[settlement]
    if reason is LedgerReason.job_capture:
        balance = await new_movements.capture_held(session, user.id, 3_000, k, "job:1", amount)
    else:
        balance = await new_movements.release_held(session, user.id, 3_000, k, "job:1")
    assert balance == after
    settled = await row_by_key(session, f"{k}:settle")
    assert settled is not None
    assert (settled.amount, settled.reason, settled.balance_after, settled.reference) == (
        returned,
        reason.value,
        after,
        "job:1",
    )
    assert await state_of(session, user.id) == State(after, 0, after, 3)
    assert await unsettled_reservations(session, user.id) == 0
    # The same hold settled again (were a job's lock not taken), even with another hold on the account to
    # take it from: the ledger's key refuses it, whichever way, and nothing moves.
    await new_movements.hold_new(session, user.id, 3_000, key())
    for again in (new_movements.capture_held, new_movements.release_held):
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                await again(session, user.id, 3_000, k, "job:1")
    assert await state_of(session, user.id) == State(after - 3_000, 3_000, after - 3_000, 4)


async def test_a_hold_is_never_settled_for_more_than_the_account_holds(
    session: AsyncSession, user: User
) -> None:
    k = key()
    await new_movements.hold_new(session, user.id, 1_000, k)
    with pytest.raises(RuntimeError, match="does not hold"):
        async with session.begin_nested():
            await new_movements.release_held(session, user.id, 2_000, k, None)
    with pytest.raises(ValueError, match="cannot capture"):
        await new_movements.capture_held(session, user.id, 1_000, k, None, 1_001)
    assert await state_of(session, user.id) == State(BONUS - 1_000, 1_000, BONUS - 1_000, 2)


async def test_refund_claws_back_from_the_balance(session: AsyncSession, user: User) -> None:
    await credits.grant(session, user.id, 5_000, LedgerReason.purchase, key())
    k = key()
    result = await credits.refund(session, user.id, 5_000, k, reference="refund_1")
    await assert_row(session, result.taken, k, -5_000, LedgerReason.refund, BONUS)
    assert result.shortfall == 0
    assert await state_of(session, user.id) == State(BONUS, 0, BONUS, 3)


async def test_refund_after_the_credits_were_spent_reports_the_shortfall(
    session: AsyncSession, user: User
) -> None:
    await credits.grant(session, user.id, 5_000, LedgerReason.purchase, key())
    await credits.debit(session, user.id, 13_000, LedgerReason.chargeback, key())
    k = key()
    result = await credits.refund(session, user.id, 5_000, k)
    await assert_row(session, result.taken, k, -2_000, LedgerReason.refund, 0)
    assert result.shortfall == 3_000
    assert await state_of(session, user.id) == State(0, 0, 0, 4)

    # Nothing left to take: a zero row still spends the key, the whole amount is the shortfall.
    k = key()
    nothing_left = await credits.refund(session, user.id, 1_000, k)
    await assert_row(session, nothing_left.taken, k, 0, LedgerReason.refund, 0)
    assert nothing_left.shortfall == 1_000
    assert await state_of(session, user.id) == State(0, 0, 0, 5)


async def test_refund_ignores_credits_held_by_a_reservation(session: AsyncSession, user: User) -> None:
    r = key()
    await credits.reserve(session, user.id, 8_000, r)
    result = await credits.refund(session, user.id, 5_000, key())
    assert (result.taken.entry.amount, result.shortfall) == (-2_000, 3_000)
    assert await state_of(session, user.id) == State(0, 8_000, 0, 3)
    await credits.release(session, r)
    assert await state_of(session, user.id) == State(8_000, 0, 8_000, 4)


async def test_grant_refuses_spending_reasons(session: AsyncSession, user: User) -> None:
    for reason in (LedgerReason.job_capture, LedgerReason.refund, LedgerReason.chargeback):
        with pytest.raises(ValueError, match="not a grant"):
            await credits.grant(session, user.id, 1_000, reason, key())
    assert await state_of(session, user.id) == State(BONUS, 0, BONUS, 1)


# Admin adjustments go both ways (tests/routers/admin/test_credits.py); the other grant reasons only add.
@pytest.mark.parametrize("operation", ["debit", "refund"])
@pytest.mark.parametrize("reason", sorted(credits.GRANT_REASONS - {LedgerReason.admin_adjustment}))
async def test_spending_refuses_grant_reasons(
    session: AsyncSession, user: User, operation: str, reason: LedgerReason
) -> None:
    spend = (
        credits.debit(session, user.id, 1_000, reason, key())
        if operation == "debit"
        else credits.refund(session, user.id, 1_000, key(), reason=reason)
    )
    try:
        with pytest.raises(ValueError, match=r"\S"):
            await spend
    finally:
        assert await state_of(session, user.id) == State(BONUS, 0, BONUS, 1)


async def test_capture_of_an_unknown_reservation_is_refused(session: AsyncSession, user: User) -> None:
    grant_key = key()
    await credits.grant(session, user.id, 1_000, LedgerReason.purchase, grant_key)
    with pytest.raises(ValueError, match="no reservation"):
        await credits.capture(session, key())
    with pytest.raises(ValueError, match="no reservation"):
        await credits.release(session, grant_key)
    assert await state_of(session, user.id) == State(BONUS + 1_000, 0, BONUS + 1_000, 2)


# --- insufficient credits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["debit", "reserve"])
async def test_spending_beyond_the_balance_is_402_and_writes_nothing(
    session: AsyncSession, user: User, operation: str
) -> None:
    k = key()
    spend = (
        credits.debit(session, user.id, BONUS + 1, LedgerReason.chargeback, k)
        if operation == "debit"
        else credits.reserve(session, user.id, BONUS + 1, k)
    )
    with pytest.raises(InsufficientCredits) as raised:
        await spend
    assert raised.value.status_code == 402
    assert raised.value.code == "insufficient_credits"
    assert raised.value.extra == {"required": 10.001, "available": 10.0}
    assert await state_of(session, user.id) == State(BONUS, 0, BONUS, 1)
    # The key was not burnt: the same movement succeeds once the credits are there.
    assert await row_by_key(session, k) is None
    await credits.grant(session, user.id, 1, LedgerReason.purchase, key())
    assert (await credits.debit(session, user.id, BONUS + 1, LedgerReason.chargeback, k)).replayed is False
    assert await state_of(session, user.id) == State(0, 0, 0, 3)


async def test_insufficient_credits_renders_as_a_402_body(session: AsyncSession, user: User) -> None:
    with pytest.raises(InsufficientCredits) as raised:
        await credits.debit(session, user.id, 12_500, LedgerReason.chargeback, key())
    response = render_app_error(raised.value, "req-1")
    assert response.status_code == 402
    assert json.loads(bytes(response.body)) == {
        "error": "insufficient_credits",
        "detail": "This needs 12.500 credits and 10.000 are available.",
        "request_id": "req-1",
        "required": 12.5,
        "available": 10.0,
    }


# --- idempotency --------------------------------------------------------------------------------------------


async def _run_grant(session: AsyncSession, user_id: uuid.UUID, k: str) -> Movement:
    return await credits.grant(session, user_id, 2_000, LedgerReason.purchase, k)


async def _run_debit(session: AsyncSession, user_id: uuid.UUID, k: str) -> Movement:
    return await credits.debit(session, user_id, 2_000, LedgerReason.chargeback, k)


async def _run_reserve(session: AsyncSession, user_id: uuid.UUID, k: str) -> Movement:
    return await credits.reserve(session, user_id, 2_000, k)


async def _run_refund(session: AsyncSession, user_id: uuid.UUID, k: str) -> Movement:
    result = await credits.refund(session, user_id, 2_000, k)
    assert result.shortfall == 0
    return result.taken


async def _run_capture(session: AsyncSession, user_id: uuid.UUID, k: str) -> Movement:
    if await row_by_key(session, k) is None:
        await credits.reserve(session, user_id, 2_000, k)
    return await credits.capture(session, k)


async def _run_release(session: AsyncSession, user_id: uuid.UUID, k: str) -> Movement:
    if await row_by_key(session, k) is None:
        await credits.reserve(session, user_id, 2_000, k)
    return await credits.release(session, k)


Operation = Callable[[AsyncSession, uuid.UUID, str], Awaitable[Movement]]
OPERATIONS: dict[str, Operation] = {
    "grant": _run_grant,
    "debit": _run_debit,
    "reserve": _run_reserve,
    "refund": _run_refund,
    "capture": _run_capture,
    "release": _run_release,
}


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_the_same_key_twice_replays_and_moves_nothing(
    session: AsyncSession, user: User, operation: str
) -> None:
    run = OPERATIONS[operation]
    k = key()
    first = await run(session, user.id, k)
    assert first.replayed is False
    before = await state_of(session, user.id)

    second = await run(session, user.id, k)

    assert second.replayed is True
    assert second.entry.id == first.entry.id
    assert await state_of(session, user.id) == before


async def test_a_replayed_refund_reports_the_first_shortfall(session: AsyncSession, user: User) -> None:
    k = key()
    first = await credits.refund(session, user.id, BONUS + 4_000, k)
    assert first.shortfall == 4_000
    await credits.grant(session, user.id, 9_000, LedgerReason.purchase, key())
    before = await state_of(session, user.id)

    again = await credits.refund(session, user.id, BONUS + 4_000, k)

    assert again.taken.replayed is True
    assert again.taken.entry.id == first.taken.entry.id
    assert again.shortfall == 4_000
    assert await state_of(session, user.id) == before


async def _grant_2000(session: AsyncSession, user_id: uuid.UUID, k: str) -> object:
    return await credits.grant(session, user_id, 2_000, LedgerReason.purchase, k)


async def _grant_3000(session: AsyncSession, user_id: uuid.UUID, k: str) -> object:
    return await credits.grant(session, user_id, 3_000, LedgerReason.purchase, k)


async def _grant_subscription(session: AsyncSession, user_id: uuid.UUID, k: str) -> object:
    return await credits.grant(session, user_id, 2_000, LedgerReason.subscription, k)


async def _debit_2000(session: AsyncSession, user_id: uuid.UUID, k: str) -> object:
    return await credits.debit(session, user_id, 2_000, LedgerReason.chargeback, k)


async def _debit_3000(session: AsyncSession, user_id: uuid.UUID, k: str) -> object:
    return await credits.debit(session, user_id, 3_000, LedgerReason.chargeback, k)


async def _reserve_2000(session: AsyncSession, user_id: uuid.UUID, k: str) -> object:
    return await credits.reserve(session, user_id, 2_000, k)


async def _reserve_3000(session: AsyncSession, user_id: uuid.UUID, k: str) -> object:
    return await credits.reserve(session, user_id, 3_000, k)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (_grant_2000, _grant_3000),
        (_grant_2000, _grant_subscription),
        (_debit_2000, _debit_3000),
        (_reserve_2000, _reserve_3000),
        (_grant_2000, _debit_2000),
        (_debit_2000, _reserve_2000),
        (_reserve_2000, _debit_2000),
    ],
    ids=[
        "grant-other-amount",
        "grant-other-reason",
        "debit-other-amount",
        "reserve-other-amount",
        "grant-then-debit",
        "debit-then-reserve",
        "reserve-then-debit",
    ],
)
async def test_the_same_key_for_a_different_movement_is_a_conflict(
    session: AsyncSession,
    user: User,
    first: Callable[[AsyncSession, uuid.UUID, str], Awaitable[object]],
    second: Callable[[AsyncSession, uuid.UUID, str], Awaitable[object]],
) -> None:
    k = key()
    await first(session, user.id, k)
    before = await state_of(session, user.id)
    with pytest.raises(IdempotencyKeyConflict) as raised:
        await second(session, user.id, k)
    assert (raised.value.status_code, raised.value.code) == (409, "idempotency_key_reused")
    assert await state_of(session, user.id) == before


@pytest.mark.parametrize("order", ["capture-then-release", "release-then-capture"])
async def test_a_reservation_is_settled_once_whichever_way(
    session: AsyncSession, user: User, order: str
) -> None:
    k = key()
    await credits.reserve(session, user.id, 3_000, k)
    settle, then = (
        (credits.capture, credits.release)
        if order == "capture-then-release"
        else (credits.release, credits.capture)
    )
    settled = await settle(session, k)
    before = await state_of(session, user.id)
    assert before.reserved == 0

    with pytest.raises(IdempotencyKeyConflict, match=f"already settled as {settled.entry.reason}"):
        await then(session, k)

    assert await state_of(session, user.id) == before
    # ...and settling the first way again is still a harmless replay.
    assert (await settle(session, k)).replayed is True
    assert await state_of(session, user.id) == before


@pytest.mark.parametrize("operation", ["grant", "debit", "reserve", "refund"])
async def test_a_key_already_used_by_another_user_is_a_conflict(
    session: AsyncSession, settings: Settings, user: User, operation: str
) -> None:
    other = await make_user(session, settings)
    k = key()
    run = OPERATIONS[operation]
    await run(session, other.id, k)
    theirs = await state_of(session, other.id)
    with pytest.raises(IdempotencyKeyConflict):
        await run(session, user.id, k)
    assert await state_of(session, user.id) == State(BONUS, 0, BONUS, 1)
    assert await state_of(session, other.id) == theirs


@pytest.mark.parametrize("operation", ["grant", "debit", "reserve"])
async def test_a_refund_under_another_movements_key_is_a_conflict(
    session: AsyncSession, user: User, operation: str
) -> None:
    k = key()
    await OPERATIONS[operation](session, user.id, k)
    before = await state_of(session, user.id)
    with pytest.raises(IdempotencyKeyConflict):
        await credits.refund(session, user.id, 2_000, k)
    assert await state_of(session, user.id) == before


async def test_a_refund_replayed_with_another_reason_is_a_conflict(session: AsyncSession, user: User) -> None:
    k = key()
    await credits.refund(session, user.id, 2_000, k)
    before = await state_of(session, user.id)
    with pytest.raises(IdempotencyKeyConflict):
        await credits.refund(session, user.id, 2_000, k, reason=LedgerReason.chargeback)
    assert await state_of(session, user.id) == before


async def test_a_refund_replayed_with_another_amount_is_a_conflict(session: AsyncSession, user: User) -> None:
    k = key()
    first = await credits.refund(session, user.id, 3_000, k)
    assert first.shortfall == 0
    before = await state_of(session, user.id)
    with pytest.raises(IdempotencyKeyConflict):
        await credits.refund(session, user.id, 5_000, k)
    assert await state_of(session, user.id) == before


async def test_a_replayed_refund_that_took_nothing_still_moves_nothing(
    session: AsyncSession, user: User
) -> None:
    await credits.debit(session, user.id, BONUS, LedgerReason.chargeback, key())
    k = key()
    first = await credits.refund(session, user.id, 4_000, k)
    assert (first.taken.entry.amount, first.shortfall) == (0, 4_000)
    await credits.grant(session, user.id, 6_000, LedgerReason.purchase, key())
    before = await state_of(session, user.id)

    again = await credits.refund(session, user.id, 4_000, k)

    assert again.taken.replayed is True
    assert again.taken.entry.id == first.taken.entry.id
    assert again.shortfall == 4_000
    assert await state_of(session, user.id) == before


@pytest.mark.parametrize("amount", [0, -5_000])
@pytest.mark.parametrize("operation", ["grant", "debit", "reserve", "refund"])
async def test_an_amount_that_is_not_positive_is_refused(
    session: AsyncSession, user: User, operation: str, amount: int
) -> None:
    # A reservation must be held too: a negative reserve would otherwise drain it into the balance.
    await credits.reserve(session, user.id, 4_000, key())
    before = await state_of(session, user.id)
    move = {
        "grant": lambda: credits.grant(session, user.id, amount, LedgerReason.purchase, key()),
        "debit": lambda: credits.debit(session, user.id, amount, LedgerReason.chargeback, key()),
        "reserve": lambda: credits.reserve(session, user.id, amount, key()),
        "refund": lambda: credits.refund(session, user.id, amount, key()),
    }[operation]
    with pytest.raises(ValueError, match="must be positive"):
        await move()
    assert await state_of(session, user.id) == before


# --- conversions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credits_in", "millicredits"),
    [
        ("0.2", 200),
        ("10", 10_000),
        ("1.5", 1_500),
        ("0.001", 1),
        ("0", 0),
        ("1.2340", 1_234),
        ("12.345", 12_345),
    ],
)
def test_to_millicredits_is_exact_to_three_places(credits_in: str, millicredits: int) -> None:
    assert credits.to_millicredits(Decimal(credits_in)) == millicredits


@pytest.mark.parametrize("credits_in", ["0.0001", "1.2345", "0.0005", "10.0001"])
def test_to_millicredits_refuses_a_fourth_decimal(credits_in: str) -> None:
    with pytest.raises(ValueError, match="at most 3 decimal places"):
        credits.to_millicredits(Decimal(credits_in))


def test_to_credits_renders_three_places() -> None:
    assert credits.to_credits(200) == Decimal("0.200")
    assert str(credits.to_credits(1)) == "0.001"
    assert str(credits.to_credits(10_000)) == "10.000"


@hypothesis_settings(database=None)
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_millicredits_round_trip(millicredits: int) -> None:
    assert credits.to_millicredits(credits.to_credits(millicredits)) == millicredits


# --- the invariants under random sequences ---------------------------------------------------------------

# Mostly affordable amounts (so reservations exist to settle), some beyond the balance, and the edges.
amounts = st.one_of(
    st.integers(min_value=1, max_value=4_000),
    st.integers(min_value=4_001, max_value=25_000),
    st.sampled_from([1, 999, 1_000, BONUS]),
)
holds = st.integers(min_value=0, max_value=20)  # which reservation to settle, modulo their number
steps = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), amounts),
        st.tuples(st.just("capture"), holds),
        st.tuples(st.just("release"), holds),
        st.tuples(st.just("grant"), amounts),
        st.tuples(st.just("debit"), amounts),
        st.tuples(st.just("refund"), amounts),
        st.tuples(st.just("reserve"), amounts),
        st.tuples(st.just("capture"), holds),
        st.tuples(st.just("release"), holds),
        st.tuples(st.just("debit_all"), st.just(0)),
        st.tuples(st.just("replay"), holds),
    ),
    min_size=2,
    max_size=30,
)


@dataclass
class Model:
    balance: int = BONUS
    reserved: int = 0
    # reservation key -> [amount, "capture" | "release" | None]
    holds: dict[str, list[Any]] = field(default_factory=dict)
    # movements that can be run again verbatim: (operation, amount, key)
    done: list[tuple[str, int, str]] = field(default_factory=list)


async def apply_step(session: AsyncSession, user_id: uuid.UUID, model: Model, name: str, n: int) -> None:
    k = key()
    if name == "debit_all":
        name, n = "debit", max(model.balance, 1)
    if name == "grant":
        assert (await credits.grant(session, user_id, n, LedgerReason.purchase, k)).replayed is False
        model.balance += n
        model.done.append((name, n, k))
    elif name in ("debit", "reserve"):
        spend = (
            credits.debit(session, user_id, n, LedgerReason.chargeback, k)
            if name == "debit"
            else credits.reserve(session, user_id, n, k)
        )
        if n > model.balance:
            with pytest.raises(InsufficientCredits) as raised:
                await spend
            assert raised.value.extra == {
                "required": float(credits.to_credits(n)),
                "available": float(credits.to_credits(model.balance)),
            }
            return
        assert (await spend).replayed is False
        model.balance -= n
        model.done.append((name, n, k))
        if name == "reserve":
            model.reserved += n
            model.holds[k] = [n, None]
    elif name in ("capture", "release"):
        if not model.holds:
            return
        k = list(model.holds)[n % len(model.holds)]
        amount, settled = model.holds[k]
        settle = credits.capture if name == "capture" else credits.release
        if settled is not None and settled != name:
            with pytest.raises(IdempotencyKeyConflict):
                await settle(session, k)
            return
        movement = await settle(session, k)
        assert movement.replayed is (settled == name)
        if settled is None:
            model.holds[k][1] = name
            model.reserved -= amount
            if name == "release":
                model.balance += amount
    elif name == "refund":
        result = await credits.refund(session, user_id, n, k)
        take = min(n, model.balance)
        assert result.shortfall == n - take
        assert (result.taken.replayed, result.taken.entry.amount) == (False, -take)
        model.balance -= take
    elif name == "replay":
        if not model.done:
            return
        operation, amount, k = model.done[n % len(model.done)]
        if operation == "grant":
            again = await credits.grant(session, user_id, amount, LedgerReason.purchase, k)
        elif operation == "debit":
            again = await credits.debit(session, user_id, amount, LedgerReason.chargeback, k)
        else:
            again = await credits.reserve(session, user_id, amount, k)
        assert again.replayed is True
    else:  # pragma: no cover
        raise AssertionError(name)


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps)
async def test_random_sequences_keep_the_ledger_invariants(
    session: AsyncSession, settings: Settings, steps: list[tuple[str, int]]
) -> None:
    # One savepoint per example, rolled back at the end, and a fresh user each time: no example sees
    # another's rows.
    async with session.begin_nested() as example:
        user = await make_user(session, settings)
        model = Model()
        for name, n in steps:
            await apply_step(session, user.id, model, name, n)
            state = await state_of(session, user.id)  # asserts balance == sum(ledger), both >= 0
            assert (state.balance, state.reserved) == (model.balance, model.reserved), (name, n)
            assert state.reserved == await unsettled_reservations(session, user.id)
        await example.rollback()


# --- HTTP ---------------------------------------------------------------------------------------------------


@pytest.fixture
async def five_entries(session: AsyncSession, user: User) -> list[CreditLedgerEntry]:
    """The signup bonus and four grants, oldest first."""
    bonus = await row_by_key(session, f"signup_bonus:{user.id}")
    assert bonus is not None
    entries = [bonus]
    for n in range(1, 5):
        movement = await credits.grant(session, user.id, n * 100, LedgerReason.purchase, key())
        entries.append(movement.entry)
    return entries


async def test_transactions_page_newest_first_without_gaps_or_overlap(
    client: httpx.AsyncClient, container: Container, user: User, five_entries: list[CreditLedgerEntry]
) -> None:
    headers = bearer(container, user)
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get(TRANSACTIONS, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)

    assert [len(page) for page in pages] == [2, 2, 1]
    assert cursor is None
    seen = [item["id"] for page in pages for item in page]
    assert seen == [str(entry.id) for entry in reversed(five_entries)]
    first = pages[0][0]
    assert first["amount"] == 0.4
    assert isinstance(first["amount"], float)
    assert first["reason"] == "purchase"
    assert first["balance_after"] == 11.0
    last = pages[-1][-1]
    assert (last["reason"], last["amount"], last["balance_after"]) == ("signup_bonus", 10.0, 10.0)
    created = [item["created_at"] for page in pages for item in page]
    assert created == sorted(created, reverse=True)


async def test_transactions_default_page_holds_everything(
    client: httpx.AsyncClient, container: Container, user: User, five_entries: list[CreditLedgerEntry]
) -> None:
    response = await client.get(TRANSACTIONS, headers=bearer(container, user))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["id"] for item in body["items"]] == [str(entry.id) for entry in reversed(five_entries)]
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        "%%%",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"]').decode(),
        base64.urlsafe_b64encode(b'["yesterday", "00000000-0000-0000-0000-000000000000"]').decode(),
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", "not-a-uuid"]').decode(),
        base64.urlsafe_b64encode(b"[1]").decode(),
        base64.urlsafe_b64encode(b"null").decode(),
        # Valid JSON, wrong types: must not reach uuid.UUID()/fromisoformat() as non-strings (a 500).
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", 5]').decode(),
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", []]').decode(),
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", {}]').decode(),
        base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", true]').decode(),
        base64.urlsafe_b64encode(b'[20260101, "00000000-0000-0000-0000-000000000000"]').decode(),
    ],
)
async def test_a_malformed_cursor_is_400(
    client: httpx.AsyncClient, container: Container, user: User, cursor: str
) -> None:
    response = await client.get(TRANSACTIONS, params={"cursor": cursor}, headers=bearer(container, user))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_cursor"


@pytest.mark.parametrize("limit", [0, -1, 101, "x"])
async def test_a_limit_out_of_range_is_422(
    client: httpx.AsyncClient, container: Container, user: User, limit: object
) -> None:
    response = await client.get(TRANSACTIONS, params={"limit": limit}, headers=bearer(container, user))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"


async def test_limits_at_the_bounds_are_accepted(
    client: httpx.AsyncClient, container: Container, user: User
) -> None:
    for limit in (1, 100):
        response = await client.get(TRANSACTIONS, params={"limit": limit}, headers=bearer(container, user))
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", [TRANSACTIONS, "/api/v1/users/credits"])
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz"])
async def test_credits_endpoints_need_authentication(
    client: httpx.AsyncClient, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get(path, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] in ("unauthenticated", "invalid_token")


async def test_a_user_never_sees_another_users_rows(
    session: AsyncSession,
    settings: Settings,
    client: httpx.AsyncClient,
    container: Container,
    user: User,
    five_entries: list[CreditLedgerEntry],
) -> None:
    other = await make_user(session, settings)
    theirs = await credits.grant(session, other.id, 7_000, LedgerReason.purchase, key())

    mine = (await client.get(TRANSACTIONS, params={"limit": 100}, headers=bearer(container, user))).json()
    assert {item["id"] for item in mine["items"]} == {str(entry.id) for entry in five_entries}

    response = await client.get(TRANSACTIONS, params={"limit": 100}, headers=bearer(container, other))
    ids = [item["id"] for item in response.json()["items"]]
    assert len(ids) == 2
    assert str(theirs.entry.id) in ids
    assert not set(ids) & {str(entry.id) for entry in five_entries}

    # A cursor taken from my pages only positions within the caller's own rows.
    first = (await client.get(TRANSACTIONS, params={"limit": 1}, headers=bearer(container, user))).json()
    response = await client.get(
        TRANSACTIONS, params={"limit": 100, "cursor": first["next_cursor"]}, headers=bearer(container, other)
    )
    assert response.status_code == 200
    assert not {item["id"] for item in response.json()["items"]} & {str(entry.id) for entry in five_entries}


async def test_my_credits_for_a_new_user(client: httpx.AsyncClient, container: Container, user: User) -> None:
    response = await client.get("/api/v1/users/credits", headers=bearer(container, user))
    assert response.status_code == 200, response.text
    assert response.json() == {"credits": 10.0, "plan": "free"}
    assert isinstance(response.json()["credits"], float)


async def test_my_credits_follow_the_balance_to_the_thousandth(
    session: AsyncSession, client: httpx.AsyncClient, container: Container, user: User
) -> None:
    await credits.reserve(session, user.id, 200, key())
    await credits.debit(session, user.id, 1, LedgerReason.chargeback, key())
    response = await client.get("/api/v1/users/credits", headers=bearer(container, user))
    assert response.json() == {"credits": 9.799, "plan": "free"}


# --- real concurrency (committed rows, cleaned up) -------------------------------------------------------


@pytest.fixture
async def committed(engine: AsyncEngine) -> AsyncIterator[tuple[Database, list[uuid.UUID]]]:
    """A Database that really commits (not the rolled-back `database` fixture), and a list to register the
    users whose rows are deleted afterwards, children first."""
    database = Database(engine)
    user_ids: list[uuid.UUID] = []
    yield database, user_ids
    if not user_ids:
        return
    async with database.session_scope() as session:
        account_ids = list(
            await session.scalars(select(CreditAccount.id).where(CreditAccount.user_id.in_(user_ids)))
        )
        if account_ids:
            await session.execute(
                delete(CreditLedgerEntry).where(CreditLedgerEntry.account_id.in_(account_ids))
            )
            await session.execute(delete(CreditAccount).where(CreditAccount.id.in_(account_ids)))
        await session.execute(delete(User).where(User.id.in_(user_ids)))
    async with database.session_scope() as session:
        assert await session.scalar(select(func.count()).where(User.id.in_(user_ids))) == 0


async def committed_user(database: Database, user_ids: list[uuid.UUID], settings: Settings) -> uuid.UUID:
    async with database.session_scope() as session:
        user = await make_user(session, settings)
        user_ids.append(user.id)
    return user.id


async def committed_state(database: Database, user_id: uuid.UUID) -> tuple[State, dict[str, int]]:
    async with database.session_scope() as session:
        state = await state_of(session, user_id)
        reasons = (
            await session.execute(
                select(CreditLedgerEntry.reason, func.count())
                .join(CreditAccount, CreditAccount.id == CreditLedgerEntry.account_id)
                .where(CreditAccount.user_id == user_id)
                .group_by(CreditLedgerEntry.reason)
            )
        ).all()
    return state, {str(reason): int(count) for reason, count in reasons}


@pytest.mark.parametrize(
    ("operation", "rows"),
    [
        ("debit", {"chargeback": 10}),
        ("spend_now", {"job_reserve": 10, "job_capture": 10}),
        ("design charge", {"job_reserve": 10, "job_capture": 10}),
        ("new hold", {"job_reserve": 10}),
    ],
)
async def test_concurrent_spends_never_overspend(
    committed: tuple[Database, list[uuid.UUID]], settings: Settings, operation: str, rows: dict[str, int]
) -> None:
    database, user_ids = committed
    user_id = await committed_user(database, user_ids, settings)
    price = BONUS // 10  # the balance covers exactly ten

    async def spend(i: int) -> object:
        key = f"race:{user_id}:{i}"
        if operation == "design charge":  # on a Core connection of its own: one statement on PostgreSQL
            return await design_spend.charge_alone(
                database, user_id, UsageAction.palette, price, uuid.uuid4()
            )
        async with database.session_scope() as session:
            if operation == "debit":
                return await credits.debit(session, user_id, price, LedgerReason.chargeback, key)
            if operation == "new hold":
                return await new_movements.hold_new(session, user_id, price, key)
            return await new_movements.spend_now(session, user_id, price, key)

    outcomes = await asyncio.gather(*(spend(i) for i in range(50)), return_exceptions=True)

    refused = [o for o in outcomes if isinstance(o, InsufficientCredits)]
    unexpected = [o for o in outcomes if isinstance(o, BaseException) and o not in refused]
    assert not unexpected, unexpected
    assert (len(outcomes) - len(refused), len(refused)) == (10, 40)
    state, reasons = await committed_state(database, user_id)
    held = BONUS if operation == "new hold" else 0  # the holds keep what left the balance
    assert state == State(0, held, 0, 1 + sum(rows.values()))
    assert reasons == {"signup_bonus": 1, **rows}


async def test_concurrent_grants_with_one_key_move_the_balance_once(
    committed: tuple[Database, list[uuid.UUID]], settings: Settings
) -> None:
    database, user_ids = committed
    user_id = await committed_user(database, user_ids, settings)
    k = f"race-grant:{user_id}"

    async def give() -> Movement:
        async with database.session_scope() as session:
            return await credits.grant(session, user_id, 5_000, LedgerReason.purchase, k)

    outcomes = await asyncio.gather(*(give() for _ in range(10)), return_exceptions=True)

    assert all(isinstance(o, Movement) for o in outcomes), outcomes
    movements = [o for o in outcomes if isinstance(o, Movement)]
    assert sum(not m.replayed for m in movements) == 1
    assert len({m.entry.id for m in movements}) == 1
    state, reasons = await committed_state(database, user_id)
    assert state == State(BONUS + 5_000, 0, BONUS + 5_000, 2)
    assert reasons == {"signup_bonus": 1, "purchase": 1}


# Races made deterministic: a third transaction holds the account row while every contender passes its
# idempotency check and queues on the row, then lets them all go. Needs row locks, so not on SQLite.

LOCK_WAITERS = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'",
    "mariadb": "SELECT COUNT(*) FROM information_schema.INNODB_TRX t "
    "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
    "WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()",
}


@pytest.fixture
def row_locking(test_database: TestDatabase) -> str:
    if test_database.id not in LOCK_WAITERS:
        pytest.skip("SQLite has no row locks to race on: writers take turns on the whole file")
    return test_database.id


Contender = Callable[[AsyncSession], Awaitable[Movement]]


async def race_on_the_account_row(
    database: Database, backend: str, user_id: uuid.UUID, *contenders: Contender
) -> list[Movement | BaseException]:
    async def run(contender: Contender) -> Movement:
        async with database.session_scope() as session:
            return await contender(session)

    async with database.sessionmaker() as holder:
        await holder.execute(
            select(CreditAccount.id).where(CreditAccount.user_id == user_id).with_for_update()
        )
        tasks = [asyncio.ensure_future(run(contender)) for contender in contenders]
        try:
            async with database.sessionmaker() as watcher:
                for _ in range(50):
                    waiting = await watcher.scalar(text(LOCK_WAITERS[backend]))
                    await watcher.rollback()
                    if waiting is not None and waiting >= len(contenders):
                        break
                    # Slower than 0.1 s: InnoDB refreshes INNODB_TRX only when unread for that long.
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError("the contenders never queued on the account row")
        finally:
            await holder.rollback()
            # Even when the watch failed: no contender is left holding a transaction open.
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    return list(outcomes)


async def race_one_key_grants(
    committed: tuple[Database, list[uuid.UUID]], backend: str, settings: Settings
) -> tuple[uuid.UUID, list[Movement | BaseException]]:
    database, user_ids = committed
    user_id = await committed_user(database, user_ids, settings)
    k = f"grant:{user_id}"

    async def give(session: AsyncSession) -> Movement:
        return await credits.grant(session, user_id, 5_000, LedgerReason.purchase, k)

    return user_id, await race_on_the_account_row(database, backend, user_id, give, give, give)


async def test_racing_grants_with_one_key_grant_once(
    committed: tuple[Database, list[uuid.UUID]], row_locking: str, settings: Settings
) -> None:
    user_id, outcomes = await race_one_key_grants(committed, row_locking, settings)
    state, reasons = await committed_state(committed[0], user_id)
    assert state == State(BONUS + 5_000, 0, BONUS + 5_000, 2)
    assert reasons == {"signup_bonus": 1, "purchase": 1}
    assert sum(isinstance(o, Movement) and not o.replayed for o in outcomes) == 1, outcomes


async def test_racing_grants_with_one_key_all_answer_the_movement(
    committed: tuple[Database, list[uuid.UUID]], row_locking: str, settings: Settings
) -> None:
    _, outcomes = await race_one_key_grants(committed, row_locking, settings)
    assert all(isinstance(o, Movement) for o in outcomes), outcomes
    assert sorted(o.replayed for o in outcomes if isinstance(o, Movement)) == [False, True, True]


async def race_retry_of_a_spend(
    committed: tuple[Database, list[uuid.UUID]], backend: str, settings: Settings
) -> tuple[uuid.UUID, list[Movement | BaseException]]:
    database, user_ids = committed
    user_id = await committed_user(database, user_ids, settings)
    k = f"retry:{user_id}"

    async def spend_everything(session: AsyncSession) -> Movement:
        return await credits.debit(session, user_id, BONUS, LedgerReason.chargeback, k)

    return user_id, await race_on_the_account_row(
        database, backend, user_id, spend_everything, spend_everything
    )


async def test_racing_a_spend_with_its_own_retry_spends_once(
    committed: tuple[Database, list[uuid.UUID]], row_locking: str, settings: Settings
) -> None:
    user_id, outcomes = await race_retry_of_a_spend(committed, row_locking, settings)
    state, reasons = await committed_state(committed[0], user_id)
    assert state == State(0, 0, 0, 2)
    assert reasons == {"signup_bonus": 1, "chargeback": 1}
    assert sum(isinstance(o, Movement) and not o.replayed for o in outcomes) == 1, outcomes


async def test_racing_a_spend_with_its_own_retry_answers_the_retry_as_a_replay(
    committed: tuple[Database, list[uuid.UUID]], row_locking: str, settings: Settings
) -> None:
    _, outcomes = await race_retry_of_a_spend(committed, row_locking, settings)
    assert all(isinstance(o, Movement) for o in outcomes), outcomes
    assert sorted(o.replayed for o in outcomes if isinstance(o, Movement)) == [False, True]


async def race_capture_with_release(
    committed: tuple[Database, list[uuid.UUID]], backend: str, settings: Settings
) -> tuple[uuid.UUID, list[Movement | BaseException]]:
    database, user_ids = committed
    user_id = await committed_user(database, user_ids, settings)
    k = f"job:{user_id}"
    async with database.session_scope() as session:
        await credits.reserve(session, user_id, 3_000, k)

    async def capture(session: AsyncSession) -> Movement:
        return await credits.capture(session, k)

    async def release(session: AsyncSession) -> Movement:
        return await credits.release(session, k)

    return user_id, await race_on_the_account_row(database, backend, user_id, capture, release)


async def test_racing_capture_and_release_settles_once(
    committed: tuple[Database, list[uuid.UUID]], row_locking: str, settings: Settings
) -> None:
    user_id, outcomes = await race_capture_with_release(committed, row_locking, settings)
    state, reasons = await committed_state(committed[0], user_id)
    assert state.reserved == 0
    assert reasons.get("job_capture", 0) + reasons.get("job_release", 0) == 1, reasons
    assert state.balance == (BONUS if "job_release" in reasons else BONUS - 3_000)
    assert sum(isinstance(o, Movement) for o in outcomes) == 1, outcomes


async def test_racing_capture_and_release_the_loser_gets_a_conflict(
    committed: tuple[Database, list[uuid.UUID]], row_locking: str, settings: Settings
) -> None:
    _, outcomes = await race_capture_with_release(committed, row_locking, settings)
    assert sum(isinstance(o, IdempotencyKeyConflict) for o in outcomes) == 1, outcomes

"""Credit movements under keys no earlier movement can have used, so there is nothing to replay: no
look-up of the key and no savepoint, one conditional UPDATE and the ledger rows. The key names an object
the same transaction creates (a new job, a new palette), or settles a hold whose object the caller has
locked in a state that proves it unsettled. The ledger's unique key still fails a transaction that
reuses one. The replayable movements, and the rules every movement follows, are app/services/credits.py's."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.db.base import utcnow
from app.models import LedgerReason
from app.repositories import credits as credit_reads
from app.repositories import usage as usage_rows
from app.repositories.base import Executor
from app.services.credits import InsufficientCredits, positive_amount, settlement_key, stored_balance


async def spend_now(
    db: Executor,
    user_id: uuid.UUID,
    amount: int,
    key: str,
    reference: str | None = None,
    usage: dict[str, Any] | None = None,
) -> int:
    """Reserve and capture at once, for work already done: the same two ledger rows as `credits.reserve`
    then `credits.capture` (the hold under `key`, its settlement under `key:settle`), and the `usage`
    record when given (a `usage.row` of the spender), written only if the conditional spend took the
    credits. Returns the balance after; 402 when it does not cover `amount`. `key` must be new (it names
    a fresh object): this is no replayable movement, and a reused key fails the transaction.

    On a Core connection to PostgreSQL, all of it is one statement; elsewhere one UPDATE and an INSERT
    per table."""
    now = utcnow()
    hold = _ledger_row(-amount, LedgerReason.job_reserve, key, reference, now)
    settle = _ledger_row(0, LedgerReason.job_capture, settlement_key(key), reference, now)
    if usage is not None and credit_reads.spends_in_one_statement(db):
        spent = await credit_reads.spend_recorded(db, user_id, positive_amount(amount), (hold, settle), usage)
    else:
        spent = await credit_reads.move_by_user(db, user_id, -positive_amount(amount))
        if spent is not None:
            await _append(db, spent, [hold, settle])
            if usage is not None:
                await usage_rows.append(db, usage)
    if spent is None:
        raise InsufficientCredits(amount, await stored_balance(db, user_id))
    return spent[1]


async def hold_new(
    db: Executor, user_id: uuid.UUID, amount: int, key: str, reference: str | None = None
) -> int:
    """`credits.reserve` under a key no movement can have used yet (it names an object this transaction
    creates, such as a new job): there is no earlier movement to replay, so no look-up and no savepoint,
    two statements (the conditional UPDATE and the ledger row) where `credits.reserve` takes six.
    Returns the balance after; 402 when it does not cover `amount`. A reused key fails the transaction
    (the ledger's unique key)."""
    moved = await credit_reads.move_by_user(db, user_id, -positive_amount(amount), amount)
    if moved is None:
        raise InsufficientCredits(amount, await stored_balance(db, user_id))
    await _append(db, moved, [_ledger_row(-amount, LedgerReason.job_reserve, key, reference, utcnow())])
    return moved[1]


async def capture_held(
    db: Executor,
    user_id: uuid.UUID,
    held: int,
    reservation_key: str,
    reference: str | None,
    amount: int | None = None,
) -> int:
    """`credits.capture` of a `hold_new` hold of `held` credits whose object the caller has locked in a
    state that proves the hold unsettled (a job not yet ended, under its row lock: every settlement of a
    job's hold takes that lock and ends the job in the same transaction, and erasure deletes it). Nothing
    to look up, so two statements instead of eight; returns the balance after. Were the hold settled all
    the same, the ledger's unique key fails the transaction: never a second settlement."""
    if amount is not None and not 0 < amount <= held:
        raise ValueError(f"cannot capture {amount} of a reservation of {held}")
    returned = 0 if amount is None else held - amount
    reason = LedgerReason.job_capture
    return await _settle_held(db, user_id, held, returned, reason, reservation_key, reference)


async def release_held(
    db: Executor, user_id: uuid.UUID, held: int, reservation_key: str, reference: str | None
) -> int:
    """`credits.release` of a hold under the same conditions as `capture_held`; returns the balance after."""
    return await _settle_held(db, user_id, held, held, LedgerReason.job_release, reservation_key, reference)


async def _settle_held(
    db: Executor,
    user_id: uuid.UUID,
    held: int,
    returned: int,
    reason: LedgerReason,
    reservation_key: str,
    reference: str | None,
) -> int:
    moved = await credit_reads.move_by_user(db, user_id, returned, -positive_amount(held))
    if moved is None:  # less held on the account than this hold: the books are wrong, so move nothing
        raise RuntimeError(f"the account of user {user_id} does not hold {held} for {reservation_key!r}")
    key = settlement_key(reservation_key)
    await _append(db, moved, [_ledger_row(returned, reason, key, reference, utcnow())])
    return moved[1]


def _ledger_row(
    amount: int, reason: LedgerReason, key: str, reference: str | None, at: datetime
) -> dict[str, Any]:
    """A ledger row's own values; its account and balance after come from the movement (`_append`)."""
    return {
        "id": uuid.uuid4(),
        "amount": amount,
        "reason": reason.value,
        "idempotency_key": key,
        "reference": reference,
        "created_at": at,
    }


async def _append(db: Executor, moved: tuple[uuid.UUID, int], rows: list[dict[str, Any]]) -> None:
    """The ledger `rows` of a movement `move_by_user` made, with its account and balance after."""
    account_id, balance = moved
    await credit_reads.add_entries(
        db, [{**row, "account_id": account_id, "balance_after": balance} for row in rows]
    )

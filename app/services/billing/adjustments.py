"""Refunds and disputes of an order's payment, recorded as facts and applied to its money and credits.

Each fact is recorded once as an `order_adjustments` row whose key is the provider's identity of that fact
(a refund id, Stripe's charge and cumulative refunded amount, a dispute id) and also the ledger key of the
credits it moves: a refund (its own amount), a chargeback (the disputed money taken back) and a dispute
won (given back). A fact about an order that is not paid yet waits, and `orders.fulfil` applies it when
the payment lands; a fact about another payment than the one that paid the order is not this order's.

`Order.refunded_amount` counts the money back with the customer: refunds plus the chargebacks that stand.
The credits taken back are always the share of that (`credits * min(refunded, amount) // amount`): every
applied fact moves the credits by the change of the share, so the result does not depend on the order the
facts came in. Never below zero: what was spent already becomes a `credit_debts` row (reference = the
fact's key) instead."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.models import AdjustmentKind, LedgerReason, Order, OrderAdjustment, OrderStatus, PlanKind
from app.models.audit import AuditAction
from app.repositories.billing import CreditDebtRepository, OrderAdjustmentRepository, OrderRepository
from app.services import audit, credits

log = structlog.get_logger("app.billing")


# --- the keys of dispute facts ---------------------------------------------------------------------


def won_key(chargeback_key: str) -> str:
    """The key of the decision that gives back what the chargeback under `chargeback_key` took."""
    return "chargeback_won:" + chargeback_key.removeprefix("chargeback:")


def _chargeback_key_of(won: str) -> str:
    return "chargeback:" + won.removeprefix("chargeback_won:")


def _dispute_note(chargeback_key: str) -> str:
    provider, _, dispute_id = chargeback_key.removeprefix("chargeback:").partition(":")
    return f"Charged back: {provider} dispute {dispute_id}"[:500]


# --- recording and applying ------------------------------------------------------------------------


def of_another_payment(order: Order, payment_id: str | None) -> bool:
    """The order was paid, by another payment than `payment_id`."""
    return (
        order.paid_at is not None
        and payment_id is not None
        and order.provider_payment_id is not None
        and order.provider_payment_id != payment_id
    )


async def locked(session: AsyncSession, order: Order) -> Order:
    """The order's row, locked: every movement of one order's money queues on it (a refund and a dispute
    of one order never both count from the same start)."""
    row = await OrderRepository(session).get(order.id, for_update=True)
    assert row is not None
    await session.refresh(row)  # the committed state, not what this session read before the lock
    return row


async def record(
    session: AsyncSession,
    order: Order,
    key: str,
    kind: AdjustmentKind,
    payment_id: str | None,
    amount: int | None,
) -> OrderAdjustment | None:
    """Record a fact about the (locked) order once, and apply it if the order is paid. None when a fact
    with this key was recorded before."""
    adjustment = await OrderAdjustmentRepository(session).record(
        {
            "order_id": order.id,
            "key": key,
            "kind": kind.value,
            "payment_id": payment_id,
            "amount": amount,
            "created_at": utcnow(),
        }
    )
    if adjustment is None:
        return None
    if order.paid_at is not None:
        await apply(session, order, adjustment)
    else:
        log.info("billing.adjustment_pending", order_id=str(order.id), key=key, kind=kind.value)
    await session.flush()
    return adjustment


async def apply_pending(session: AsyncSession, order: Order) -> None:
    """Apply the facts recorded while the (just paid) order waited for its payment."""
    for adjustment in await OrderAdjustmentRepository(session).pending(order.id):
        if of_another_payment(order, adjustment.payment_id):
            continue  # another attempt's refund or dispute: never this order's money
        await apply(session, order, adjustment)


async def apply(session: AsyncSession, order: Order, adjustment: OrderAdjustment) -> None:
    """Apply one recorded fact to a paid (and locked) order: its money moves `refunded_amount`, its credits
    follow the share (see the module's docstring)."""
    adjustment.applied_at = utcnow()
    if order.amount <= 0:
        return
    kind = AdjustmentKind(adjustment.kind)
    before = order.refunded_amount
    disputed = adjustment.amount if adjustment.amount and adjustment.amount > 0 else order.amount
    if kind is AdjustmentKind.refund:
        after = before + (adjustment.amount or 0)
    elif kind is AdjustmentKind.chargeback:
        after = before + disputed
    else:
        after = max(0, before - disputed)
    order.refunded_amount = after
    order.status = (OrderStatus.refunded if after >= order.amount else OrderStatus.paid).value
    await audit.record(
        session,
        action=AuditAction.payment_refunded
        if kind is AdjustmentKind.refund
        else AuditAction.payment_disputed,
        subject_id=order.user_id,
        details={
            "order_id": order.id,
            "adjustment": kind.value,
            "refunded_before": before,
            "refunded_after": after,
            "currency": order.currency,
        },
    )
    if kind is AdjustmentKind.chargeback:
        order.failure_reason = _dispute_note(adjustment.key)
    elif kind is AdjustmentKind.chargeback_won and order.failure_reason == _dispute_note(
        _chargeback_key_of(adjustment.key)
    ):
        order.failure_reason = None
    if order.kind != PlanKind.credit_pack:
        return  # a subscription's credits come with its invoices (see invoices.py), not with its order
    share_before, share_after = _credit_share(order, before), _credit_share(order, after)
    if share_after > share_before:
        reason = LedgerReason.refund if kind is AdjustmentKind.refund else LedgerReason.chargeback
        await _take(session, order, share_after - share_before, adjustment.key, reason)
    elif share_after < share_before:
        await _give_back(session, order, share_before - share_after, adjustment.key)
    else:
        log.info("billing.adjustment_moves_no_credits", order_id=str(order.id), key=adjustment.key)


def _credit_share(order: Order, refunded: int) -> int:
    return order.credits * min(refunded, order.amount) // order.amount


async def _take(session: AsyncSession, order: Order, share: int, key: str, reason: LedgerReason) -> None:
    outcome = await credits.refund(
        session, order.user_id, share, key=key, reference=f"order:{order.id}", reason=reason
    )
    if outcome.shortfall > 0:
        await owe(session, order.user_id, order.id, outcome.shortfall, reason, key)
        log.warning("billing.shortfall", order_id=str(order.id), key=key, shortfall=outcome.shortfall)
    log.warning("billing.credits_taken_back", order_id=str(order.id), key=key, credits=share)


async def _give_back(session: AsyncSession, order: Order, share: int, won: str) -> None:
    """A dispute was won: `share` credits come back. What its chargeback could not take (a debt) is
    cancelled first, the rest is granted again as a purchase (key `chargeback_won:...`)."""
    chargeback_key = _chargeback_key_of(won)
    debts = CreditDebtRepository(session)
    owed = await debts.amount_owed(chargeback_key)
    if owed > 0 and await debts.forgive(chargeback_key, "chargeback_won", utcnow()):
        share -= min(share, owed)
    if share > 0:
        await credits.grant(
            session, order.user_id, share, LedgerReason.purchase, key=won, reference=f"order:{order.id}"
        )
    log.info("billing.chargeback_won", order_id=str(order.id), key=won, credits=share)


async def owe(
    session: AsyncSession,
    user_id: uuid.UUID,
    order_id: uuid.UUID | None,
    amount: int,
    reason: LedgerReason,
    key: str,
) -> None:
    """Credits a refund or chargeback (ledger key `key`) could not take because they were spent."""
    await CreditDebtRepository(session).record(
        {
            "user_id": user_id,
            "order_id": order_id,
            "amount": amount,
            "reason": reason.value,
            "reference": key,
            "created_at": utcnow(),
        }
    )

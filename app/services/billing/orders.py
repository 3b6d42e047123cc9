"""An order's payment, whatever order the providers' events come in (none of them promises one):

* Paid in full: `payment_received` compares what the provider says was paid with the order's price first.
  A credit pack paid with less money or in another currency grants nothing: the order fails as
  `amount_mismatch: ...` (logged), and no later confirmation of that payment pays it.
* Paid once: `fulfil` marks the order paid, issues its tax invoice (numbered in the same transaction,
  tax_invoices.py) and grants its credits (ledger key `order:<id>`) once, then applies every refund and
  dispute that arrived before the payment did (adjustments.py).
* Refunded: `refund` records the provider's refund against the order (adjustments.py), whichever arrives
  first, the refund or the payment.
"""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.base import utcnow
from app.errors import NotFound
from app.integrations.payments.base import OrderRef
from app.models import AdjustmentKind, LedgerReason, Order, OrderStatus, PlanKind, Provider, User
from app.models.audit import AuditAction
from app.repositories.billing import OrderAdjustmentRepository, OrderRepository
from app.services import audit, credits
from app.services.billing import adjustments, tax_invoices

log = structlog.get_logger("app.billing")
AMOUNT_MISMATCH = "amount_mismatch"


async def list_orders(
    session: AsyncSession, user: User, limit: int = 100, *, status: OrderStatus | None = None
) -> list[Order]:
    """The user's orders, newest first; only those in `status` when given."""
    return await OrderRepository(session).list_for_user(user.id, limit, status)


async def get_by_payment_id(session: AsyncSession, user: User, provider: Provider, payment_id: str) -> Order:
    """The user's order that the provider's payment `payment_id` paid (or failed): known once the
    provider's webhook named the payment, so 404 before that, as for another user's payment."""
    order = await OrderRepository(session).get_by_provider_payment_id(provider.value, payment_id)
    if order is None or order.user_id != user.id:
        raise NotFound("No such payment.")
    return order


async def find(session: AsyncSession, provider: Provider, ref: OrderRef) -> Order | None:
    """The order a provider names: by our id (if it is that provider's order), else by its checkout."""
    orders = OrderRepository(session)
    if ref.order_id is not None:
        order = await orders.get(ref.order_id)
        if order is not None and order.provider == provider.value:
            return order
    if ref.checkout_id is not None:
        return await orders.get_by_provider_order_id(provider.value, ref.checkout_id)
    return None


def _covers(order: Order, amount: int | None, currency: str | None) -> bool:
    return (
        amount is not None
        and amount >= order.amount
        and currency is not None
        and currency.upper() == order.currency.upper()
    )


async def payment_received(
    session: AsyncSession,
    order: Order,
    payment_id: str | None,
    *,
    amount: int | None,
    currency: str | None,
    settings: Settings,
) -> bool:
    """The provider says `payment_id` paid this order `amount` (minor units of `currency`). A credit pack
    is paid (see `fulfil`) only when that covers its price in its currency; otherwise the order fails as an
    amount mismatch and grants nothing. True when this call changed the order."""
    if order.kind == PlanKind.credit_pack and not _covers(order, amount, currency):
        reason = f"{AMOUNT_MISMATCH}: paid {amount} {currency}, the price is {order.amount} {order.currency}"
        changed = await OrderRepository(session).mark_failed(
            order.id, reason, utcnow(), payment_id=payment_id
        )
        log.warning(
            "billing.amount_mismatch",
            order_id=str(order.id),
            provider=order.provider,
            paid=amount,
            paid_currency=currency,
            price=order.amount,
            currency=order.currency,
            changed=changed,
        )
        return changed
    return await fulfil(session, order, payment_id, settings=settings)


def refused(order: Order, payment_id: str | None) -> bool:
    """This payment was refused for its amount: a confirmation of it again (a client's verification, a
    redelivery under another event id) does not pay the order."""
    return (
        order.status == OrderStatus.failed.value
        and payment_id is not None
        and order.provider_payment_id == payment_id
        and (order.failure_reason or "").startswith(AMOUNT_MISMATCH)
    )


async def fulfil(session: AsyncSession, order: Order, payment_id: str | None, *, settings: Settings) -> bool:
    """Mark the order paid, issue its tax invoice and grant its credits, once, then apply the refunds
    and disputes recorded while it waited for its payment. True when this call did it."""
    if refused(order, payment_id):
        log.warning("billing.refused_payment_confirmed_again", order_id=str(order.id))
        return False
    if not await OrderRepository(session).mark_paid(order.id, payment_id, utcnow()):
        return False
    await session.refresh(order)
    if order.kind == PlanKind.credit_pack:
        await credits.grant(
            session,
            order.user_id,
            order.credits,
            LedgerReason.purchase,
            key=f"order:{order.id}",
            reference=f"{order.provider}:{payment_id or order.provider_order_id}",
        )
    log.info("billing.order_paid", order_id=str(order.id), provider=order.provider)
    await audit.record(
        session,
        action=AuditAction.payment_credited,
        subject_id=order.user_id,
        details={
            "order_id": order.id,
            "provider": order.provider,
            "amount": order.amount,
            "currency": order.currency,
            "credits": order.credits if order.kind == PlanKind.credit_pack else 0,
        },
    )
    await adjustments.apply_pending(session, order)
    # Last: the year's invoice counter stays locked until the transaction ends, and every payment queues
    # on it, so it is held for as short a time as the transaction allows.
    await tax_invoices.issue(session, settings, order)
    await session.flush()
    return True


async def fail(session: AsyncSession, order: Order, reason: str) -> None:
    if await OrderRepository(session).mark_failed(order.id, reason, utcnow()):
        log.info("billing.order_failed", order_id=str(order.id), provider=order.provider)


async def refund(
    session: AsyncSession,
    order: Order,
    key: str,
    *,
    payment_id: str | None,
    refunded_total: int | None = None,
    increment: int | None = None,
) -> bool:
    """The provider refunded part or all of `payment_id`, this order's payment, told as this refund's own
    amount (`increment`) or as the payment's new cumulative refunded amount (`refunded_total`): recorded
    once under `key` and applied now, or when the order is paid (adjustments.py). False when the payment
    is not the one that paid this order."""
    order = await adjustments.locked(session, order)
    if adjustments.of_another_payment(order, payment_id):
        log.info("billing.refund_of_another_payment", order_id=str(order.id), payment_id=payment_id)
        return False
    if await credits.movement_exists(session, key):
        return True  # applied before refunds were recorded as adjustments
    if refunded_total is not None:
        amount = refunded_total - await OrderAdjustmentRepository(session).refunded_by(order.id, payment_id)
    else:
        amount = increment or 0
    if amount > 0:
        await adjustments.record(session, order, key, AdjustmentKind.refund, payment_id, amount)
    return True


def in_order_units(order: Order, refunded: int, charged: int | None) -> int:
    """A charge's refunded amount as the same part of the order's amount: a charge can be for more than
    the order (tax added on top) or in the customer's currency (Adaptive Pricing)."""
    if charged is None or charged == order.amount:
        return refunded
    return order.amount * min(refunded, charged) // charged

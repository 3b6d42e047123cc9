"""Disputes (chargebacks) of an order's payment: the rules, the same for every provider (each provider's
module in app/integrations/payments reads its dispute events into `Disputed` with an effect):

* Taken when a real chargeback opens, not when it is lost: `chargeback` records the dispute (key
  `chargeback:<provider>:<dispute id>`) on the first event that shows a chargeback open or lost (Stripe
  created/updated/funds_withdrawn/closed-lost, Razorpay created/under_review/action_required/lost, Dodo
  opened/challenged/accepted/lost/expired): the disputed money counts as returned to the customer and its
  share of the credits is taken back, with the ledger reason `chargeback`. Stripe and Dodo take the money
  from us at that moment; Razorpay deducts it only on a loss, but the cardholder has asked for it back all
  the same, and taking the credits at the opening keeps them from being spent while the dispute is argued
  (a win gives them back). Inquiries that move no money (Stripe `warning_*`, Razorpay retrieval and fraud
  phases) take nothing; if one escalates, the escalation takes.
* Once per dispute, in any order and under any event id: later events of the dispute find it recorded.
* A refund and a chargeback of the same money (a dispute settled by a refund) never take the credits
  twice: the share is of their sum, at most the whole order (adjustments.py). While a dispute stands,
  `Order.failure_reason` names it.
* Won (the provider gives the money back to us): `chargeback_won` records the decision (key
  `chargeback_won:<provider>:<dispute id>`), once: the disputed money leaves `refunded_amount`, and the
  credits its return buys back come back as a `purchase` grant under that key (its chargeback's debt is
  cancelled first). If the customer was refunded meanwhile, that money stays with them and so do the
  credits. A decision that arrives before the dispute's opening records the opening first, so the opening,
  when it comes, finds the dispute settled.

Disputes of a subscription renewal's payment (no order) follow the same rules in invoices.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.integrations.payments.base import DisputeEffect
from app.models import AdjustmentKind, Order, Provider
from app.repositories.billing import OrderAdjustmentRepository
from app.services import credits
from app.services.billing import adjustments

log = structlog.get_logger("app.billing")


@dataclass(frozen=True)
class Dispute:
    """A provider's dispute of one of our payments. `dispute_id` is unique per provider (plus the round,
    for a dispute re-opened after we won it); `amount` is in the order's minor units, None when it cannot
    be told (then the whole payment counts as disputed); `payment_id` is the disputed payment."""

    provider: Provider
    dispute_id: str
    amount: int | None
    payment_id: str | None = None

    @property
    def key(self) -> str:
        """The ledger and adjustment key of its chargeback."""
        return f"chargeback:{self.provider.value}:{self.dispute_id}"

    @property
    def disputed(self) -> int | None:
        return self.amount if self.amount is not None and self.amount > 0 else None


async def apply(session: AsyncSession, order: Order, effect: DisputeEffect | None, dispute: Dispute) -> bool:
    """Apply news of a dispute of this order's payment. False (ignored) when the disputed payment is not
    the one that paid the order."""
    if effect == "chargeback":
        return await chargeback(session, order, dispute)
    if effect == "won":
        return await chargeback_won(session, order, dispute)
    log.info("billing.dispute_without_effect", order_id=str(order.id), dispute_id=dispute.dispute_id)
    return True


async def chargeback(session: AsyncSession, order: Order, dispute: Dispute) -> bool:
    """A chargeback stands against this order's payment: recorded once and applied now, or when the order
    is paid. False when the disputed payment is not the one that paid this order."""
    order = await adjustments.locked(session, order)
    if adjustments.of_another_payment(order, dispute.payment_id):
        log.info("billing.dispute_of_another_payment", order_id=str(order.id), dispute=dispute.dispute_id)
        return False
    await _ensure_chargeback(session, order, dispute)
    return True


async def _ensure_chargeback(session: AsyncSession, order: Order, dispute: Dispute) -> None:
    if await OrderAdjustmentRepository(session).get_by_key(dispute.key) is not None:
        return
    if await credits.movement_exists(session, dispute.key):
        # Taken before disputes were recorded as adjustments: recorded now as applied, moving nothing.
        recorded = await OrderAdjustmentRepository(session).record(
            {
                "order_id": order.id,
                "key": dispute.key,
                "kind": AdjustmentKind.chargeback.value,
                "payment_id": dispute.payment_id,
                "amount": dispute.disputed,
                "created_at": utcnow(),
                "applied_at": utcnow(),
            }
        )
        assert recorded is not None
        return
    await adjustments.record(
        session, order, dispute.key, AdjustmentKind.chargeback, dispute.payment_id, dispute.disputed
    )


async def chargeback_won(session: AsyncSession, order: Order, dispute: Dispute) -> bool:
    """We won the dispute (the provider gave the money back): its chargeback is undone once, now or when
    the order is paid. False when the disputed payment is not the one that paid this order."""
    order = await adjustments.locked(session, order)
    if adjustments.of_another_payment(order, dispute.payment_id):
        log.info("billing.dispute_of_another_payment", order_id=str(order.id), dispute=dispute.dispute_id)
        return False
    await _ensure_chargeback(session, order, dispute)  # the decision may overtake the opening
    opened = await OrderAdjustmentRepository(session).get_by_key(dispute.key)
    assert opened is not None
    # The money that comes back is what the chargeback counted, whatever the decision event says.
    await adjustments.record(
        session,
        order,
        adjustments.won_key(dispute.key),
        AdjustmentKind.chargeback_won,
        dispute.payment_id,
        opened.amount,
    )
    return True

"""Refunds and disputes of a subscription renewal's payment.

A subscription invoice has no order: what it bought is one ledger grant (reason `subscription`, key
`<provider>_invoice:<invoice id>`, written by `subscriptions.paid`). A refund or a dispute of a payment that
is none of our orders may be such an invoice's: the provider is asked which invoices that payment paid
(Stripe: neither a Charge nor a Dispute names its invoice, and `invoice.paid` does not name its payment
intent), and each one's grant is taken back by the rules for orders (adjustments.py, disputes.py):

* Shares are cumulative: a refund brings the invoice's refunded share to `credits * refunded / paid` (the
  payment's cumulative refunded amount of what it charged), so refunds in several parts add up to exactly
  the grant, never more; a chargeback takes `credits * disputed / paid`, at most what is left. Shares round
  down (in the customer's favour, as for orders).
* Once: a refund under a key unique per refund state (`stripe_refund:<charge>:<amount_refunded>:<invoice>`),
  a chargeback under `chargeback:<provider>:<dispute>:<invoice>`; redeliveries find their row.
* Never below zero: what was spent becomes a `credit_debts` row (no order), as for orders.
* A won dispute gives back what its chargeback took, once, as a `subscription` grant (`chargeback_won:...`),
  and cancels its debt.
* With no order row to count the money given back, the ledger counts it: the rows written against the
  grant (`reference` = the grant's key) — refunds, and chargebacks not since won — say how much of the grant
  was already taken back (or owed). The grant's row is locked first, so refunds and disputes of one invoice
  queue instead of both counting from the same start.

A failing lookup raises PaymentGatewayError: the webhook inbox answers 500 and the provider delivers the
event again. An event about a payment that paid no invoice of ours is ignored."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.integrations.payments.base import Disputed, InvoicePayment, OrderRef, PaymentGateway, Refunded
from app.models import CreditLedgerEntry, LedgerReason, Provider
from app.repositories.billing import CreditDebtRepository, InvoiceGrantRepository, SubscriptionRepository
from app.repositories.credits import CreditRepository
from app.services import credits
from app.services.billing import adjustments, orders
from app.services.billing.disputes import Dispute

log = structlog.get_logger("app.billing")


class RenewalNotGrantedYet(Exception):
    """A refund of a renewal whose `invoice.paid` has not been applied yet: retried by redelivery."""


def grant_key(provider: Provider, invoice_id: str) -> str:
    """The ledger key of the credits one paid subscription invoice granted."""
    return f"{provider.value}_invoice:{invoice_id}"


async def _paid_invoices(gateway: PaymentGateway, payment_id: str) -> list[InvoicePayment]:
    """The invoices this payment paid (one in practice), asked of the provider."""
    seen: set[str] = set()
    paid: list[InvoicePayment] = []
    for payment in await gateway.invoices_paid_by(payment_id):
        if payment.status != "canceled" and payment.invoice_id not in seen:  # canceled: it never paid
            seen.add(payment.invoice_id)
            paid.append(payment)
    return paid


# --- webhook events about a payment that is none of our orders -------------------------------------


async def refunded(
    session: AsyncSession, gateway: PaymentGateway, provider: Provider, event: Refunded
) -> bool:
    """If the refunded payment paid subscription invoices we granted credits for, `refunded / charged` of
    each invoice's credits comes back (a payment of several invoices is refunded pro rata). Only a refund
    told as the payment's refunded total (Stripe's) can be measured so. False (ignored) for anything else."""
    if not event.cumulative or event.charged is None or event.amount <= 0:
        return False
    handled = False
    for payment in await _paid_invoices(gateway, event.payment.payment_id):
        key = f"{provider.value}_refund:{event.refund_id}:{payment.invoice_id}"
        granted = grant_key(provider, payment.invoice_id)
        if await refund(session, granted, key, refunded_total=event.amount, paid=event.charged):
            handled = True
        elif await _bills_our_subscription(session, gateway, provider, payment.invoice_id):
            # Events come in any order: this renewal's invoice.paid is still on its way. Answering 500
            # makes the provider redeliver the refund, which then finds the grant; ignoring it would lose it.
            raise RenewalNotGrantedYet(f"invoice {payment.invoice_id} is refunded before it was granted")
    return handled


async def _bills_our_subscription(
    session: AsyncSession, gateway: PaymentGateway, provider: Provider, invoice_id: str
) -> bool:
    """The invoice bills a subscription one of our checkouts opened (its metadata names our order), or
    one we already know."""
    billed = await gateway.invoice_subscription(invoice_id)
    if billed is None:
        return False
    if await orders.find(session, provider, OrderRef(order_id=billed.order_id)) is not None:
        return True
    subscriptions = SubscriptionRepository(session)
    return await subscriptions.get_by_provider_id(provider.value, billed.subscription_id) is not None


async def disputed(
    session: AsyncSession, gateway: PaymentGateway, provider: Provider, event: Disputed
) -> bool:
    """If the disputed payment paid subscription invoices we granted credits for, the disputed share of
    each invoice's credits is charged back (or given back when won), once per dispute and invoice. False
    (ignored) for anything else."""
    payments = await _paid_invoices(gateway, event.payment.payment_id)
    paid = sum(p.amount_paid if p.amount_paid is not None else p.amount_requested for p in payments)
    amount = event.amount
    if event.currency is not None and any(p.currency.lower() != event.currency.lower() for p in payments):
        amount = None  # not comparable with what was paid: the whole payment counts as disputed
    handled = False
    for payment in payments:
        granted = grant_key(provider, payment.invoice_id)
        if not await credits.movement_exists(session, granted):
            continue
        handled = True
        dispute = Dispute(provider, f"{event.dispute_id}:{payment.invoice_id}", amount)
        if event.effect == "chargeback":
            await chargeback(session, granted, dispute, paid=paid)
        elif event.effect == "won":
            await chargeback_won(session, granted, dispute, paid=paid)
        else:
            log.info("billing.dispute_without_effect", grant=granted, dispute_id=dispute.dispute_id)
    return handled


# --- the rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _InvoiceGrant:
    key: str
    user_id: uuid.UUID
    credits: int
    given_back: int  # what refunds and standing chargebacks already took back or left owed

    def share(self, amount: int, paid: int) -> int:
        return self.credits * min(amount, paid) // paid


async def _invoice_grant(session: AsyncSession, key: str) -> _InvoiceGrant | None:
    repository = InvoiceGrantRepository(session)
    grant = await repository.lock_grant(key)
    if grant is None or grant.reason != LedgerReason.subscription.value or grant.amount <= 0:
        return None
    account = await CreditRepository(session).get(grant.account_id)
    assert account is not None
    rows = await repository.written_against(grant.account_id, key)
    return _InvoiceGrant(key, account.user_id, grant.amount, await _given_back(session, rows))


async def _given_back(session: AsyncSession, rows: list[CreditLedgerEntry]) -> int:
    keys = {row.idempotency_key for row in rows}
    chargebacks = [row.idempotency_key for row in rows if row.reason == LedgerReason.chargeback.value]
    # A chargeback whose debt was all it took is undone by cancelling that debt (no give-back row).
    cancelled = await CreditDebtRepository(session).references_with_reason(chargebacks, "chargeback_won")
    total = 0
    for row in rows:
        if row.reason == LedgerReason.chargeback.value:
            if adjustments.won_key(row.idempotency_key) in keys or row.idempotency_key in cancelled:
                continue  # won: given back entirely
        elif row.reason != LedgerReason.refund.value:
            continue
        total += row.requested_amount if row.requested_amount is not None else -row.amount
    return total


async def _claw_back(
    session: AsyncSession, grant: _InvoiceGrant, share: int, key: str, reason: LedgerReason
) -> None:
    outcome = await credits.refund(session, grant.user_id, share, key=key, reference=grant.key, reason=reason)
    if outcome.shortfall > 0:
        await adjustments.owe(session, grant.user_id, None, outcome.shortfall, reason, key)
        log.warning("billing.invoice_shortfall", grant=grant.key, key=key, shortfall=outcome.shortfall)
    log.warning("billing.invoice_clawed_back", grant=grant.key, key=key, credits=share, reason=reason.value)
    await session.flush()


async def refund(session: AsyncSession, granted: str, key: str, *, refunded_total: int, paid: int) -> bool:
    """The payment of a subscription invoice (`paid`, minor units) is refunded up to `refunded_total`
    (cumulative): the invoice's credits come back up to that share, once per `key`. False when no credits
    were granted under `granted` (not an invoice of ours, or not paid yet)."""
    grant = await _invoice_grant(session, granted)
    if grant is None:
        return False
    if paid <= 0 or await credits.movement_exists(session, key):
        return True  # nothing to measure a share against, or this refund state was already applied
    share = grant.share(refunded_total, paid) - grant.given_back
    if share > 0:
        await _claw_back(session, grant, share, key, LedgerReason.refund)
    else:
        log.info("billing.invoice_refund_nothing_left", grant=granted, key=key)
    return True


async def chargeback(session: AsyncSession, granted: str, dispute: Dispute, *, paid: int) -> bool:
    """A chargeback stands against the payment (`paid`, minor units) of a subscription invoice: take back
    the disputed share of its credits, once per dispute. True when this call took them."""
    grant = await _invoice_grant(session, granted)
    if grant is None or paid <= 0 or await credits.movement_exists(session, dispute.key):
        return False
    share = min(grant.credits - grant.given_back, grant.share(dispute.disputed or paid, paid))
    if share <= 0:
        log.info("billing.chargeback_nothing_left", grant=granted, key=dispute.key)
        return False
    await _claw_back(session, grant, share, dispute.key, LedgerReason.chargeback)
    return True


async def chargeback_won(session: AsyncSession, granted: str, dispute: Dispute, *, paid: int) -> bool:
    """We won the dispute of a subscription invoice's payment: undo its chargeback exactly once. True when
    this call gave the credits back."""
    await chargeback(session, granted, dispute, paid=paid)  # a no-op unless it overtook the opening
    grant = await _invoice_grant(session, granted)
    if grant is None:
        return False
    given = await _undo_chargeback(session, grant, dispute.key)
    if given is None:
        return False
    log.info("billing.chargeback_won", grant=granted, key=dispute.key, credits=given)
    await session.flush()
    return True


async def _undo_chargeback(session: AsyncSession, grant: _InvoiceGrant, key: str) -> int | None:
    """Give back what the chargeback under ledger key `key` took (a `subscription` grant, key
    `chargeback_won:...`) and cancel its debt. The credits given back when this call undid it; None when
    nothing was taken under that key, or it was already undone."""
    taken_entry = await CreditRepository(session).get_entry_by_key(key)
    if taken_entry is None:
        return None
    taken = -taken_entry.amount
    owed = (taken_entry.requested_amount or taken) - taken
    undone = False
    if taken > 0:
        given = await credits.grant(
            session,
            grant.user_id,
            taken,
            LedgerReason.subscription,
            key=adjustments.won_key(key),
            reference=grant.key,
        )
        undone = not given.replayed
    if owed > 0:
        forgiven = await CreditDebtRepository(session).forgive(key, "chargeback_won", utcnow())
        undone = undone or (taken == 0 and forgiven)
    return taken if undone else None

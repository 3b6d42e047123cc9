"""Orders with Razorpay, Stripe and Dodo: created here, paid by a client verification or a webhook,
credited exactly once whichever comes first and however often each arrives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.errors import AppError, BadRequest, Conflict, ProviderNotConfigured, ServiceUnavailable
from app.integrations.dodo_gateway import DodoGateway
from app.integrations.payments import CheckoutRequest, InvalidPaymentSignature, PaymentGatewayError
from app.integrations.razorpay_gateway import RazorpayGateway
from app.integrations.stripe_gateway import StripeGateway
from app.models import (
    CreditLedgerEntry,
    LedgerReason,
    Order,
    OrderStatus,
    PlanKind,
    Provider,
    Subscription,
    User,
)
from app.models.billing import AdjustmentKind, OrderAdjustment
from app.repositories.billing import (
    CreditDebtRepository,
    InvoiceGrantRepository,
    OrderAdjustmentRepository,
    OrderRepository,
    SubscriptionRepository,
)
from app.repositories.credits import CreditRepository
from app.repositories.users import UserRepository
from app.services import credits
from app.services.catalogue import PricedPlan, get_active_plan, get_plan, providers_for

log = structlog.get_logger("app.billing")
FREE_PLAN = "free"


class ProviderError(AppError):
    status_code = 502
    code = "payment_provider_error"
    default_detail = "The payment provider refused the request."


class InvalidPaymentVerification(BadRequest):
    code = "invalid_signature"
    default_detail = "The payment signature does not match."


class PlanNotAvailable(BadRequest):
    code = "plan_not_available"


class PaymentAmountMismatch(Conflict):
    code = "amount_mismatch"
    default_detail = "This payment does not cover the order's price; the order was not paid."


def _require(gateway: Any, name: str) -> Any:
    if gateway is None:
        raise ProviderNotConfigured(f"{name} is not configured on this server.")
    return gateway


def _gateway_error(exc: PaymentGatewayError) -> AppError:
    if exc.retryable:
        return ServiceUnavailable(f"{exc} Retry shortly.")
    return ProviderError(str(exc))


def _metadata(order: Order, user: User) -> dict[str, str]:
    return {"order_id": str(order.id), "user_id": str(user.id), "plan_id": str(order.plan_id or "")}


async def _new_order(
    session: AsyncSession,
    user: User,
    provider: Provider,
    priced: PricedPlan | None,
    currency: str,
    **fields: Any,
) -> Order:
    if priced is not None:
        price = priced.price(currency)
        if price is None:
            raise PlanNotAvailable(f"{priced.plan.name} is not sold in {currency}.")
        fields.setdefault("amount", price.amount)
        fields.setdefault("credits", priced.plan.credits)
        fields.setdefault("kind", priced.plan.kind)
        fields.setdefault("plan_id", priced.plan.id)
    return await OrderRepository(session).add(
        Order(user_id=user.id, provider=provider.value, currency=currency.upper(), **fields)
    )


# --- Razorpay (orders + Checkout handler verification) ---------------------------------------------


@dataclass(frozen=True)
class RazorpayOrder:
    order: Order
    key_id: str


async def create_razorpay_order(
    session: AsyncSession, ctx: Container, user: User, plan_ref: str
) -> RazorpayOrder:
    gateway: RazorpayGateway = _require(ctx.razorpay, "Razorpay")
    priced = await get_active_plan(session, plan_ref)
    if priced.plan.kind != PlanKind.credit_pack:
        raise PlanNotAvailable("Razorpay sells credit packs; use payment/subscribe for subscriptions.")
    order = await _new_order(session, user, Provider.razorpay, priced, "INR")
    try:
        created = await gateway.create_order(
            amount=order.amount, currency=order.currency, receipt=order.id.hex, notes=_metadata(order, user)
        )
    except PaymentGatewayError as exc:
        raise _gateway_error(exc) from exc
    order.provider_order_id = str(created["id"])
    await session.flush()
    return RazorpayOrder(order, gateway.key_id)


async def verify_razorpay_payment(
    session: AsyncSession, ctx: Container, user: User, *, order_id: str, payment_id: str, signature: str
) -> Order:
    gateway: RazorpayGateway = _require(ctx.razorpay, "Razorpay")
    try:
        gateway.verify_payment(order_id=order_id, payment_id=payment_id, signature=signature)
    except InvalidPaymentSignature as exc:
        raise InvalidPaymentVerification() from exc
    order = await OrderRepository(session).get_by_provider_order_id(Provider.razorpay.value, order_id)
    if order is None or order.user_id != user.id:
        raise InvalidPaymentVerification("This payment does not belong to one of your orders.")
    await fulfil(session, order, payment_id)
    if _refused(order, payment_id):
        raise PaymentAmountMismatch()
    return order


# --- hosted checkouts (Stripe, Dodo) ---------------------------------------------------------------


async def create_checkout(
    session: AsyncSession,
    ctx: Container,
    user: User,
    *,
    provider: Provider,
    plan_ref: str | None,
    custom_credits: int | None,
    currency: str,
    idempotency_key: str,
) -> Order:
    settings = ctx.settings
    if provider is Provider.stripe:
        stripe: StripeGateway = _require(ctx.stripe, "Stripe")
        if plan_ref is None:
            raise PlanNotAvailable("Stripe checkout needs a plan_id.")
        priced = await get_active_plan(session, plan_ref)
        order = await _new_order(session, user, provider, priced, currency)
        return await _stripe_checkout(session, stripe, ctx, user, order, priced, idempotency_key)
    if provider is Provider.dodo:
        dodo: DodoGateway = _require(ctx.dodo, "Dodo Payments")
        if currency.upper() != settings.dodo_currency:
            raise PlanNotAvailable(f"Dodo Payments checkouts are in {settings.dodo_currency}.")
        if plan_ref is not None:
            priced = await get_active_plan(session, plan_ref)
            if Provider.dodo.value not in providers_for(ctx, priced.plan, currency.upper()):
                raise PlanNotAvailable(f"{priced.plan.name} is not sold through Dodo Payments.")
            order = await _new_order(session, user, provider, priced, currency)
            product_id, amount = priced.plan.dodo_product_id, None
        else:
            credits_wanted = _custom_credits(settings, custom_credits)
            product_id = settings.dodo_credits_product_id
            if not product_id:
                raise PlanNotAvailable(
                    "Buying a custom amount of credits is not enabled (DODO_CREDITS_PRODUCT_ID)."
                )
            amount = credits_wanted * settings.dodo_price_per_credit_cents
            order = await _new_order(
                session,
                user,
                provider,
                None,
                currency,
                amount=amount,
                credits=credits_wanted * 1000,
                kind=PlanKind.credit_pack.value,
            )
        assert product_id is not None
        try:
            hosted = await dodo.create_checkout(
                product_id=product_id,
                quantity=1,
                amount=amount,
                customer_email=user.email,
                metadata=_metadata(order, user),
                return_url=settings.resolved_checkout_success_url,
                cancel_url=settings.resolved_checkout_cancel_url,
            )
        except PaymentGatewayError as exc:
            raise _gateway_error(exc) from exc
        order.provider_order_id, order.checkout_url = hosted.session_id, hosted.url
        await session.flush()
        return order
    raise PlanNotAvailable("Razorpay uses orders/create-order, not a hosted checkout.")


def _custom_credits(settings: Any, wanted: int | None) -> int:
    low, high = settings.dodo_min_custom_credits, settings.dodo_max_custom_credits
    if wanted is None or not low <= wanted <= high:
        raise PlanNotAvailable(f"Choose a plan_id, or between {low} and {high} credits.")
    return wanted


async def subscribe(
    session: AsyncSession, ctx: Container, user: User, plan_ref: str, currency: str, idempotency_key: str
) -> Order:
    stripe: StripeGateway = _require(ctx.stripe, "Stripe")
    priced = await get_active_plan(session, plan_ref)
    if priced.plan.kind != PlanKind.subscription:
        raise PlanNotAvailable(f"{priced.plan.name} is not a subscription.")
    order = await _new_order(session, user, Provider.stripe, priced, currency)
    return await _stripe_checkout(session, stripe, ctx, user, order, priced, idempotency_key)


async def _stripe_checkout(
    session: AsyncSession,
    stripe: StripeGateway,
    ctx: Container,
    user: User,
    order: Order,
    priced: PricedPlan,
    idempotency_key: str,
) -> Order:
    request = CheckoutRequest(
        order_id=str(order.id),
        user_id=str(user.id),
        customer_email=user.email,
        product_name=priced.plan.name,
        amount=order.amount,
        currency=order.currency,
        recurring_interval=priced.plan.interval if priced.plan.kind == PlanKind.subscription else None,
        success_url=ctx.settings.resolved_checkout_success_url + "?session_id={CHECKOUT_SESSION_ID}",
        cancel_url=ctx.settings.resolved_checkout_cancel_url,
        metadata=_metadata(order, user),
    )
    try:
        # Keyed by our order: a retry of this call can never open a second session for one order.
        hosted = await stripe.create_checkout(
            request, idempotency_key=f"pixforge-order-{order.id}-{idempotency_key}"
        )
    except PaymentGatewayError as exc:
        raise _gateway_error(exc) from exc
    order.provider_order_id, order.checkout_url = hosted.session_id, hosted.url
    await session.flush()
    return order


async def list_orders(session: AsyncSession, user: User, limit: int = 100) -> list[Order]:
    return await OrderRepository(session).list_for_user(user.id, limit)


# --- effects shared by verifications and webhooks --------------------------------------------------
#
# An order's money, whatever order the providers' events come in (none of them promises one):
#
# * Paid in full: `payment_received` compares what the provider says was paid with the order's price
#   first. A credit pack paid with less money or in another currency grants nothing: the order fails as
#   `amount_mismatch: ...` (logged), and no later confirmation of that payment pays it.
# * Paid once: `fulfil` marks the order paid and grants its credits (ledger key `order:<id>`) once, then
#   applies every refund and dispute that arrived before the payment did (below).
# * Refunds and disputes are facts about the payment, each recorded once as an `order_adjustments` row
#   whose key is the provider's identity of that fact (a refund id, Stripe's charge and cumulative refunded
#   amount, a dispute id) and also the ledger key of the credits it moves: a refund (its own amount;
#   Stripe's cumulative `amount_refunded` becomes the part not recorded yet), a chargeback (the disputed
#   money taken back) and a dispute won (given back). A fact about an order that is not paid yet waits and
#   `fulfil` applies it; a fact about another payment than the one that paid the order is not this order's.
# * `Order.refunded_amount` counts the money back with the customer: refunds plus the chargebacks that
#   stand. The credits taken back are always the share of that (`credits * min(refunded, amount) //
#   amount`): every applied fact moves the credits by the change of the share, so the result does not
#   depend on the order the facts came in. Never below zero: what was spent already becomes a
#   `credit_debts` row (reference = the fact's key) instead.

AMOUNT_MISMATCH = "amount_mismatch"


def _covers(order: Order, amount: int | None, currency: str | None) -> bool:
    return (
        isinstance(amount, int)
        and not isinstance(amount, bool)
        and amount >= order.amount
        and isinstance(currency, str)
        and currency.upper() == order.currency.upper()
    )


async def payment_received(
    session: AsyncSession,
    order: Order,
    payment_id: str | None,
    *,
    amount: int | None,
    currency: str | None,
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
    return await fulfil(session, order, payment_id)


def _refused(order: Order, payment_id: str | None) -> bool:
    """This payment was refused for its amount: a confirmation of it again (a client's verification, a
    redelivery under another event id) does not pay the order."""
    return (
        order.status == OrderStatus.failed.value
        and payment_id is not None
        and order.provider_payment_id == payment_id
        and (order.failure_reason or "").startswith(AMOUNT_MISMATCH)
    )


async def fulfil(session: AsyncSession, order: Order, payment_id: str | None) -> bool:
    """Mark the order paid and grant its credits, once, then apply the refunds and disputes recorded while
    it waited for its payment. True when this call did it."""
    if _refused(order, payment_id):
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
    for adjustment in await OrderAdjustmentRepository(session).pending(order.id):
        if _of_another_payment(order, adjustment.payment_id):
            continue  # another attempt's refund or dispute: never this order's money
        await _apply(session, order, adjustment)
    await session.flush()
    return True


async def fail(session: AsyncSession, order: Order, reason: str) -> None:
    if await OrderRepository(session).mark_failed(order.id, reason, utcnow()):
        log.info("billing.order_failed", order_id=str(order.id), provider=order.provider)


def _of_another_payment(order: Order, payment_id: str | None) -> bool:
    """The order was paid, by another payment than `payment_id`."""
    return (
        order.paid_at is not None
        and payment_id is not None
        and order.provider_payment_id is not None
        and order.provider_payment_id != payment_id
    )


async def _locked(session: AsyncSession, order: Order) -> Order:
    locked = await OrderRepository(session).get(order.id, for_update=True)
    assert locked is not None
    await session.refresh(locked)  # the committed state, not what this session read before the lock
    return locked


async def _record(
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
        await _apply(session, order, adjustment)
    else:
        log.info("billing.adjustment_pending", order_id=str(order.id), key=key, kind=kind.value)
    await session.flush()
    return adjustment


async def _apply(session: AsyncSession, order: Order, adjustment: OrderAdjustment) -> None:
    """Apply one recorded fact to a paid (and locked) order: its money moves `refunded_amount`, its credits
    follow the share (see the rules above)."""
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
    if kind is AdjustmentKind.chargeback:
        order.failure_reason = _dispute_note(adjustment.key)
    elif kind is AdjustmentKind.chargeback_won and order.failure_reason == _dispute_note(
        _chargeback_key_of(adjustment.key)
    ):
        order.failure_reason = None
    if order.kind != PlanKind.credit_pack:
        return  # a subscription's credits come with its invoices (see below), not with its order
    share_before, share_after = _credit_share(order, before), _credit_share(order, after)
    if share_after > share_before:
        reason = LedgerReason.refund if kind is AdjustmentKind.refund else LedgerReason.chargeback
        await _take(session, order, share_after - share_before, adjustment.key, reason)
    elif share_after < share_before:
        await _give_back(session, order, share_before - share_after, adjustment.key)
    else:
        log.info("billing.adjustment_moves_no_credits", order_id=str(order.id), key=adjustment.key)


async def _take(session: AsyncSession, order: Order, share: int, key: str, reason: LedgerReason) -> None:
    outcome = await credits.refund(
        session, order.user_id, share, key=key, reference=f"order:{order.id}", reason=reason
    )
    if outcome.shortfall > 0:
        await _owe(session, order.user_id, order.id, outcome.shortfall, reason, key)
        log.warning("billing.shortfall", order_id=str(order.id), key=key, shortfall=outcome.shortfall)
    log.warning("billing.credits_taken_back", order_id=str(order.id), key=key, credits=share)


async def _give_back(session: AsyncSession, order: Order, share: int, won_key: str) -> None:
    """A dispute was won: `share` credits come back. What its chargeback could not take (a debt) is
    cancelled first, the rest is granted again as a purchase (key `chargeback_won:...`)."""
    chargeback_key = _chargeback_key_of(won_key)
    debts = CreditDebtRepository(session)
    owed = await debts.amount_owed(chargeback_key)
    if owed > 0 and await debts.forgive(chargeback_key, "chargeback_won", utcnow()):
        share -= min(share, owed)
    if share > 0:
        await credits.grant(
            session, order.user_id, share, LedgerReason.purchase, key=won_key, reference=f"order:{order.id}"
        )
    log.info("billing.chargeback_won", order_id=str(order.id), key=won_key, credits=share)


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
    once under `key` and applied now, or when the order is paid (see the rules above). The order row is
    locked first, so refunds and disputes of one order queue instead of both counting from the same start.
    False when the payment is not the one that paid this order."""
    locked = await _locked(session, order)
    if _of_another_payment(locked, payment_id):
        log.info("billing.refund_of_another_payment", order_id=str(locked.id), payment_id=payment_id)
        return False
    if await credits.movement_exists(session, key):
        return True  # applied before refunds were recorded as adjustments
    if refunded_total is not None:
        amount = refunded_total - await OrderAdjustmentRepository(session).refunded_by(locked.id, payment_id)
    else:
        amount = increment or 0
    if amount > 0:
        await _record(session, locked, key, AdjustmentKind.refund, payment_id, amount)
    return True


def _credit_share(order: Order, refunded: int) -> int:
    return order.credits * min(refunded, order.amount) // order.amount


async def _owe(
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


# --- disputes (chargebacks) ------------------------------------------------------------------------
#
# The rules, the same for every provider (payment_webhooks.py maps each provider's events onto them):
#
# * Taken when a real chargeback opens, not when it is lost: `chargeback` records the dispute (key
#   `chargeback:<provider>:<dispute id>`) on the first event that shows a chargeback open or lost (Stripe
#   created/updated/funds_withdrawn/closed-lost, Razorpay created/under_review/action_required/lost, Dodo
#   opened/challenged/accepted/lost/expired): the disputed money counts as returned to the customer and
#   its share of the credits is taken back, with the ledger reason `chargeback`. Stripe and Dodo take the
#   money from us at that moment; Razorpay deducts it only on a loss, but the cardholder has asked for it
#   back all the same, and taking the credits at the opening keeps them from being spent while the dispute
#   is argued (a win gives them back). Inquiries that move no money (Stripe `warning_*`, Razorpay retrieval
#   and fraud phases) take nothing; if one escalates, the escalation takes.
# * Once per dispute, in any order and under any event id: later events of the dispute find it recorded.
# * A refund and a chargeback of the same money (a dispute settled by a refund) never take the credits
#   twice: the share is of their sum, at most the whole order. While a dispute stands,
#   `Order.failure_reason` names it.
# * Won (the provider gives the money back to us): `chargeback_won` records the decision (key
#   `chargeback_won:<provider>:<dispute id>`), once: the disputed money leaves `refunded_amount`, and the
#   credits its return buys back come back as a `purchase` grant under that key (its chargeback's debt is
#   cancelled first). If the customer was refunded meanwhile, that money stays with them and so do the
#   credits. A decision that arrives before the dispute's opening records the opening first, so the
#   opening, when it comes, finds the dispute settled.


@dataclass(frozen=True)
class Dispute:
    """A provider's dispute of one of our payments. `dispute_id` is unique per provider (plus the round,
    for a dispute re-opened after we won it); `amount` is in the order's minor units, None when it cannot
    be told (then the whole payment counts as disputed); `payment_id` is the disputed payment."""

    provider: Provider
    dispute_id: str
    amount: int | None
    payment_id: str | None = None


def _chargeback_key(dispute: Dispute) -> str:
    return f"chargeback:{dispute.provider.value}:{dispute.dispute_id}"


def _won_key(chargeback_key: str) -> str:
    return "chargeback_won:" + chargeback_key.removeprefix("chargeback:")


def _chargeback_key_of(won_key: str) -> str:
    return "chargeback:" + won_key.removeprefix("chargeback_won:")


def _dispute_note(chargeback_key: str) -> str:
    provider, _, dispute_id = chargeback_key.removeprefix("chargeback:").partition(":")
    return f"Charged back: {provider} dispute {dispute_id}"[:500]


def _dispute_amount(dispute: Dispute) -> int | None:
    return dispute.amount if dispute.amount is not None and dispute.amount > 0 else None


async def chargeback(session: AsyncSession, order: Order, dispute: Dispute) -> bool:
    """A chargeback stands against this order's payment: recorded once and applied now, or when the order
    is paid (see the rules above). False when the disputed payment is not the one that paid this order."""
    locked = await _locked(session, order)  # every movement of one order's money queues on its row
    if _of_another_payment(locked, dispute.payment_id):
        log.info("billing.dispute_of_another_payment", order_id=str(locked.id), dispute=dispute.dispute_id)
        return False
    await _ensure_chargeback(session, locked, dispute)
    return True


async def _ensure_chargeback(session: AsyncSession, order: Order, dispute: Dispute) -> None:
    key = _chargeback_key(dispute)
    if await OrderAdjustmentRepository(session).get_by_key(key) is not None:
        return
    if await credits.movement_exists(session, key):
        # Taken before disputes were recorded as adjustments: recorded now as applied, moving nothing.
        adjustment = await OrderAdjustmentRepository(session).record(
            {
                "order_id": order.id,
                "key": key,
                "kind": AdjustmentKind.chargeback.value,
                "payment_id": dispute.payment_id,
                "amount": _dispute_amount(dispute),
                "created_at": utcnow(),
                "applied_at": utcnow(),
            }
        )
        assert adjustment is not None
        return
    await _record(
        session, order, key, AdjustmentKind.chargeback, dispute.payment_id, _dispute_amount(dispute)
    )


async def chargeback_won(session: AsyncSession, order: Order, dispute: Dispute) -> bool:
    """We won the dispute (the provider gave the money back): its chargeback is undone once, now or when
    the order is paid (see the rules above). False when the disputed payment is not the one that paid
    this order."""
    locked = await _locked(session, order)
    if _of_another_payment(locked, dispute.payment_id):
        log.info("billing.dispute_of_another_payment", order_id=str(locked.id), dispute=dispute.dispute_id)
        return False
    await _ensure_chargeback(session, locked, dispute)  # the decision may overtake the opening
    chargeback_key = _chargeback_key(dispute)
    opened = await OrderAdjustmentRepository(session).get_by_key(chargeback_key)
    assert opened is not None
    # The money that comes back is what the chargeback counted, whatever the decision event says.
    await _record(
        session,
        locked,
        _won_key(chargeback_key),
        AdjustmentKind.chargeback_won,
        dispute.payment_id,
        opened.amount,
    )
    return True


async def _undo_chargeback(
    session: AsyncSession,
    user_id: uuid.UUID,
    key: str,
    *,
    reference: str,
    reason: LedgerReason,
    limit: int | None = None,
) -> int | None:
    """(Subscription invoices.) Give back what the chargeback under ledger key `key` took (a grant with
    `reason`, key `chargeback_won:...`) and cancel its debt, restoring at most `limit` credits in all (taken
    back first; the debt is cancelled only when the limit covers it too). The credits given back when this
    call undid it; None when nothing was taken under that key, nothing may be restored, or it was already
    undone."""
    taken_entry = await CreditRepository(session).get_entry_by_key(key)
    if taken_entry is None:
        return None
    taken = -taken_entry.amount
    owed = (taken_entry.requested_amount or taken) - taken
    give = taken if limit is None else max(0, min(taken, limit))
    forgive = owed > 0 and (limit is None or limit >= taken + owed)
    undone = False
    if give > 0:
        given = await credits.grant(session, user_id, give, reason, key=_won_key(key), reference=reference)
        undone = not given.replayed
    if forgive:
        forgiven = await CreditDebtRepository(session).forgive(key, "chargeback_won", utcnow())
        undone = undone or (give == 0 and forgiven)
    return give if undone else None


# --- subscription invoices (renewals) --------------------------------------------------------------
#
# A subscription invoice has no order: what it bought is one ledger grant (reason `subscription`, key
# `<provider>_invoice:<invoice id>`, written by `subscription_paid`). A refund or a dispute of the payment
# that paid it takes back its share of that grant by the rules above for orders:
#
# * Shares are cumulative: a refund brings the invoice's refunded share to `credits * refunded / paid`
#   (Stripe's cumulative `amount_refunded` of the charge's `amount`), so refunds in several parts add up to
#   exactly the grant, never more; a chargeback takes `credits * disputed / paid`, at most what is left.
#   Shares round down (in the customer's favour, as for orders).
# * Once: a refund under a key unique per refund state (`stripe_refund:<charge>:<amount_refunded>:<invoice>`),
#   a chargeback under `chargeback:<provider>:<dispute>:<invoice>`; redeliveries find their row.
# * Never below zero: what was spent becomes a `credit_debts` row (no order), as for orders.
# * A won dispute gives back what its chargeback took, once, as a `subscription` grant
#   (`chargeback_won:...`), and cancels its debt.
# * With no order row to count the money given back, the ledger counts it: the rows written against the
#   grant (`reference` = the grant's key) — refunds, and chargebacks not since won — say how much of the grant
#   was already taken back (or owed). The grant's row is locked first, so refunds and disputes of one invoice
#   queue instead of both counting from the same start.


def invoice_grant_key(provider: Provider, invoice_id: str) -> str:
    """The ledger key of the credits one paid subscription invoice granted."""
    return f"{provider.value}_invoice:{invoice_id}"


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
            if _won_key(row.idempotency_key) in keys or row.idempotency_key in cancelled:
                continue  # won: given back entirely
        elif row.reason != LedgerReason.refund.value:
            continue
        total += row.requested_amount if row.requested_amount is not None else -row.amount
    return total


async def _claw_back_invoice(
    session: AsyncSession, grant: _InvoiceGrant, share: int, key: str, reason: LedgerReason
) -> None:
    outcome = await credits.refund(session, grant.user_id, share, key=key, reference=grant.key, reason=reason)
    if outcome.shortfall > 0:
        await _owe(session, grant.user_id, None, outcome.shortfall, reason, key)
        log.warning("billing.invoice_shortfall", grant=grant.key, key=key, shortfall=outcome.shortfall)
    log.warning("billing.invoice_clawed_back", grant=grant.key, key=key, credits=share, reason=reason.value)
    await session.flush()


async def refund_invoice(
    session: AsyncSession, grant_key: str, key: str, *, refunded_total: int, paid: int
) -> bool:
    """The payment of a subscription invoice (`paid`, minor units) is refunded up to `refunded_total`
    (cumulative): the invoice's credits come back up to that share, once per `key` (see the rules above).
    False when no credits were granted under `grant_key` (not an invoice of ours, or not paid yet)."""
    grant = await _invoice_grant(session, grant_key)
    if grant is None:
        return False
    if paid <= 0 or await credits.movement_exists(session, key):
        return True  # nothing to measure a share against, or this refund state was already applied
    share = grant.share(refunded_total, paid) - grant.given_back
    if share > 0:
        await _claw_back_invoice(session, grant, share, key, LedgerReason.refund)
    else:
        log.info("billing.invoice_refund_nothing_left", grant=grant_key, key=key)
    return True


async def is_our_subscription(
    session: AsyncSession, provider: Provider, provider_subscription_id: str
) -> bool:
    found = await SubscriptionRepository(session).get_by_provider_id(provider.value, provider_subscription_id)
    return found is not None


async def invoice_granted(session: AsyncSession, grant_key: str) -> bool:
    return await credits.movement_exists(session, grant_key)


async def chargeback_invoice(session: AsyncSession, grant_key: str, dispute: Dispute, *, paid: int) -> bool:
    """A chargeback stands against the payment (`paid`, minor units) of a subscription invoice: take back
    the disputed share of its credits, once per dispute (see the rules above). True when this call took
    them."""
    grant = await _invoice_grant(session, grant_key)
    key = _chargeback_key(dispute)
    if grant is None or paid <= 0 or await credits.movement_exists(session, key):
        return False
    disputed = dispute.amount if dispute.amount is not None and dispute.amount > 0 else paid
    share = min(grant.credits - grant.given_back, grant.share(disputed, paid))
    if share <= 0:
        log.info("billing.chargeback_nothing_left", grant=grant_key, key=key)
        return False
    await _claw_back_invoice(session, grant, share, key, LedgerReason.chargeback)
    return True


async def chargeback_invoice_won(
    session: AsyncSession, grant_key: str, dispute: Dispute, *, paid: int
) -> bool:
    """We won the dispute of a subscription invoice's payment: undo its chargeback exactly once. True when
    this call gave the credits back."""
    await chargeback_invoice(session, grant_key, dispute, paid=paid)  # a no-op unless it overtook the opening
    grant = await _invoice_grant(session, grant_key)
    if grant is None:
        return False
    key = _chargeback_key(dispute)
    taken = await _undo_chargeback(
        session, grant.user_id, key, reference=grant_key, reason=LedgerReason.subscription
    )
    if taken is None:
        return False
    log.info("billing.chargeback_won", grant=grant_key, key=key, credits=taken)
    await session.flush()
    return True


async def subscription_paid(
    session: AsyncSession,
    *,
    provider: Provider,
    subscription_id: str,
    user_id: uuid.UUID,
    plan_ref: str,
    period_key: str,
    current_period_end: Any = None,
) -> None:
    """A billing period was paid: its credits (once per period) and the subscriber's plan. A payment that
    arrives after the subscription ended (events come in any order) grants its credits and nothing else."""
    plan = await get_plan(session, plan_ref)  # a plan taken off sale still renews for its subscribers
    subscription = await SubscriptionRepository(session).ensure(
        {
            "user_id": user_id,
            "plan_id": plan.id,
            "provider": provider.value,
            "provider_subscription_id": subscription_id,
            "status": "active",
        }
    )
    await credits.grant(
        session, user_id, plan.credits, LedgerReason.subscription, key=period_key, reference=subscription_id
    )
    if subscription.ended_at is None:
        subscription.status = "active"
        if current_period_end is not None:
            subscription.current_period_end = current_period_end
        user = await UserRepository(session).get(user_id)
        if user is not None and plan.grants_plan:
            user.plan = plan.grants_plan
    await session.flush()


def _subscriber(metadata: dict[str, Any]) -> tuple[uuid.UUID, str] | None:
    try:
        return uuid.UUID(str(metadata.get("user_id"))), str(metadata["plan_id"])
    except (KeyError, ValueError):
        return None


async def subscription_changed(
    session: AsyncSession,
    *,
    provider: Provider,
    subscription_id: str,
    status: str,
    cancel_at_period_end: bool = False,
    current_period_end: Any = None,
    ended: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Subscription | None:
    """Status changes. When it has ended, the subscriber's plan follows the subscriptions they still have:
    another one still running (a resubscription after a cancellation at period end) keeps its plan, none
    puts them back on the free plan. A change that arrives before anything else about the subscription
    creates its row from our metadata, so a later (out-of-order) payment sees that it ended."""
    repository = SubscriptionRepository(session)
    subscription = await repository.get_by_provider_id(provider.value, subscription_id)
    if subscription is None:
        owner = _subscriber(metadata or {})
        if owner is None:
            return None
        user_id, plan_ref = owner
        plan = await get_plan(session, plan_ref)
        subscription = await repository.ensure(
            {
                "user_id": user_id,
                "plan_id": plan.id,
                "provider": provider.value,
                "provider_subscription_id": subscription_id,
                "status": status,
            }
        )
    subscription.status = status
    subscription.cancel_at_period_end = cancel_at_period_end
    if current_period_end is not None:
        subscription.current_period_end = current_period_end
    if ended:
        subscription.ended_at = subscription.ended_at or utcnow()
        user = await UserRepository(session).get(subscription.user_id)
        if user is not None:
            still = await repository.plan_granted_by_others(subscription.user_id, subscription.id)
            user.plan = still or FREE_PLAN
    await session.flush()
    return subscription

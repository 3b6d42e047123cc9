"""Buying: an order of ours, then the provider's checkout of it (a Razorpay order for Razorpay Checkout,
a hosted Stripe or Dodo page). Razorpay Checkout's handler result is verified here too; every other
payment is confirmed by webhooks (webhooks.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.errors import BadRequest, BadSignature, Conflict
from app.integrations.payments.base import (
    CheckoutRequest,
    InvalidSignature,
    PaymentGateway,
    PaymentGatewayError,
)
from app.models import MILLICREDITS_PER_CREDIT, Order, PlanKind, Provider, User
from app.repositories.billing import OrderRepository
from app.services.billing import gateways, orders
from app.services.catalogue import PricedPlan, get_active_plan, providers_for


class PlanNotAvailable(BadRequest):
    code = "plan_not_available"


class PaymentAmountMismatch(Conflict):
    code = "amount_mismatch"
    default_detail = "This payment does not cover the order's price; the order was not paid."


@dataclass(frozen=True)
class RazorpayOrder:
    order: Order
    key_id: str


async def create_razorpay_order(
    session: AsyncSession, ctx: Container, user: User, plan_ref: str
) -> RazorpayOrder:
    gateway = gateways.gateway(ctx, Provider.razorpay)
    priced = await get_active_plan(session, plan_ref)
    if priced.plan.kind != PlanKind.credit_pack:
        raise PlanNotAvailable("Razorpay sells credit packs; use payment/subscribe for subscriptions.")
    order = await _new_order(session, user, Provider.razorpay, priced, "INR")
    await _open(session, ctx.settings, gateway, order, user, product_name=priced.plan.name)
    assert gateway.client_key is not None
    return RazorpayOrder(order, gateway.client_key)


async def verify_razorpay_payment(
    session: AsyncSession, ctx: Container, user: User, *, order_id: str, payment_id: str, signature: str
) -> Order:
    """Razorpay Checkout's handler result: the payment signature holds, the order is the caller's, and
    the payment covers its price; then the order is paid (once, whichever comes first of this and the
    webhooks)."""
    gateway = gateways.gateway(ctx, Provider.razorpay)
    try:
        gateway.verify_client_payment(order_id, payment_id, signature)
    except InvalidSignature as exc:
        raise BadSignature("The payment signature does not match.") from exc
    order = await OrderRepository(session).get_by_provider_order_id(Provider.razorpay.value, order_id)
    if order is None or order.user_id != user.id:
        raise BadSignature("This payment does not belong to one of your orders.")
    await orders.fulfil(session, order, payment_id, settings=ctx.settings)
    if orders.refused(order, payment_id):
        raise PaymentAmountMismatch()
    return order


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
    return_url: str | None = None,
) -> Order:
    """A hosted checkout: Stripe sells plans; Dodo sells plans mapped to a Dodo product, or a custom
    number of credits (a pay-what-you-want product priced per credit). `return_url`: where the provider
    sends the customer after paying, for this checkout only (a client with its own payment page);
    otherwise CHECKOUT_SUCCESS_URL."""
    if provider is Provider.stripe:
        gateway = gateways.gateway(ctx, provider)
        if plan_ref is None:
            raise PlanNotAvailable("Stripe checkout needs a plan_id.")
        return await _stripe_checkout(
            session, ctx, gateway, user, plan_ref, currency, idempotency_key, return_url=return_url
        )
    if provider is Provider.dodo:
        return await _dodo_checkout(
            session,
            ctx,
            user,
            plan_ref,
            custom_credits,
            currency=currency,
            idempotency_key=idempotency_key,
            return_url=return_url,
        )
    raise PlanNotAvailable("Razorpay uses orders/create-order, not a hosted checkout.")


async def subscribe(
    session: AsyncSession, ctx: Container, user: User, plan_ref: str, currency: str, idempotency_key: str
) -> Order:
    gateway = gateways.gateway(ctx, Provider.stripe)
    return await _stripe_checkout(
        session, ctx, gateway, user, plan_ref, currency, idempotency_key, subscription=True
    )


async def _stripe_checkout(
    session: AsyncSession,
    ctx: Container,
    gateway: PaymentGateway,
    user: User,
    plan_ref: str,
    currency: str,
    idempotency_key: str,
    *,
    subscription: bool = False,
    return_url: str | None = None,
) -> Order:
    priced = await get_active_plan(session, plan_ref)
    if subscription and priced.plan.kind != PlanKind.subscription:
        raise PlanNotAvailable(f"{priced.plan.name} is not a subscription.")
    order = await _new_order(session, user, Provider.stripe, priced, currency)
    recurring = priced.plan.interval if priced.plan.kind == PlanKind.subscription else None
    await _open(
        session,
        ctx.settings,
        gateway,
        order,
        user,
        product_name=priced.plan.name,
        idempotency_key=idempotency_key,
        recurring_interval=recurring,
        return_url=return_url,
    )
    return order


async def _dodo_checkout(
    session: AsyncSession,
    ctx: Container,
    user: User,
    plan_ref: str | None,
    custom_credits: int | None,
    *,
    currency: str,
    idempotency_key: str,
    return_url: str | None = None,
) -> Order:
    settings = ctx.settings
    gateway = gateways.gateway(ctx, Provider.dodo)
    if currency.upper() != settings.dodo_currency:
        raise PlanNotAvailable(f"Dodo Payments checkouts are in {settings.dodo_currency}.")
    if plan_ref is not None:
        priced = await get_active_plan(session, plan_ref)
        if Provider.dodo.value not in providers_for(ctx, priced.plan, currency.upper()):
            raise PlanNotAvailable(f"{priced.plan.name} is not sold through Dodo Payments.")
        order = await _new_order(session, user, Provider.dodo, priced, currency)
        product_name, product_id = priced.plan.name, priced.plan.dodo_product_id
    else:
        order = await _custom_credits_order(session, settings, user, custom_credits, currency)
        product_name = f"{order.credits // MILLICREDITS_PER_CREDIT} credits"
        product_id = settings.dodo_credits_product_id
    await _open(
        session,
        settings,
        gateway,
        order,
        user,
        product_name=product_name,
        idempotency_key=idempotency_key,
        product_id=product_id,
        product_priced=plan_ref is not None,
        return_url=return_url,
    )
    return order


async def _custom_credits_order(
    session: AsyncSession, settings: Settings, user: User, wanted: int | None, currency: str
) -> Order:
    """An order of a custom number of credits, within the configured bounds, at the price per credit."""
    low, high = settings.dodo_min_custom_credits, settings.dodo_max_custom_credits
    if wanted is None or not low <= wanted <= high:
        raise PlanNotAvailable(f"Choose a plan_id, or between {low} and {high} credits.")
    if not settings.dodo_credits_product_id:
        raise PlanNotAvailable("Buying a custom amount of credits is not enabled (DODO_CREDITS_PRODUCT_ID).")
    return await _new_order(
        session,
        user,
        Provider.dodo,
        None,
        currency,
        amount=wanted * settings.dodo_price_per_credit_cents,
        credits=wanted * MILLICREDITS_PER_CREDIT,
        kind=PlanKind.credit_pack.value,
    )


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


async def _open(
    session: AsyncSession,
    settings: Settings,
    gateway: PaymentGateway,
    order: Order,
    user: User,
    *,
    product_name: str,
    idempotency_key: str = "",
    recurring_interval: str | None = None,
    product_id: str | None = None,
    product_priced: bool = False,
    return_url: str | None = None,
) -> None:
    """The provider's checkout of the order; its id (and page) are kept on the order."""
    request = CheckoutRequest(
        order_id=order.id,
        # Keyed by our order: a retry of this call can never open a second checkout for one order.
        idempotency_key=f"pixforge-order-{order.id}-{idempotency_key}",
        product_name=product_name,
        amount=order.amount,
        currency=order.currency,
        customer_email=user.email,
        metadata={"order_id": str(order.id), "user_id": str(user.id), "plan_id": str(order.plan_id or "")},
        success_url=return_url or settings.resolved_checkout_success_url,
        cancel_url=settings.resolved_checkout_cancel_url,
        recurring_interval=recurring_interval,
        product_id=product_id,
        product_priced=product_priced,
    )
    try:
        checkout = await gateway.create_checkout(request)
    except PaymentGatewayError as exc:
        raise gateways.app_error(exc) from exc
    order.provider_order_id, order.checkout_url = checkout.checkout_id, checkout.url
    await session.flush()

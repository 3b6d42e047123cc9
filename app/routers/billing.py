from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.dependencies import ContainerDep, CurrentUser, IdempotentDep, SessionDep
from app.models import Order, Provider
from app.schemas.billing import (
    CheckoutIn,
    CheckoutOut,
    CreateOrderIn,
    OrderOut,
    OrderVerifiedOut,
    PlanOut,
    PriceOut,
    RazorpayOrderOut,
    SubscribeIn,
    VerifyOrderIn,
)
from app.services import catalogue, credits
from app.services.billing import checkout, orders

router = APIRouter(tags=["billing"])
IDEMPOTENCY_DOC = "Send an `Idempotency-Key` header to make retries safe: the first response is replayed."


@router.get("/plans", response_model=list[PlanOut])
async def plans(session: SessionDep, container: ContainerDep) -> list[PlanOut]:
    """Plans on sale, with a price per currency and the providers that take it."""
    return [
        PlanOut(
            id=priced.plan.id,
            code=priced.plan.code,
            name=priced.plan.name,
            description=priced.plan.description,
            kind=priced.plan.kind,
            credits=credits.to_credits(priced.plan.credits),
            interval=priced.plan.interval,
            prices=[
                PriceOut(
                    currency=price.currency,
                    amount=price.amount,
                    providers=catalogue.providers_for(container, priced.plan, price.currency),
                )
                for price in priced.prices
            ],
        )
        for priced in await catalogue.active_plans(session)
    ]


def order_out(order: Order) -> OrderOut:
    # A refund and a chargeback of the same money both count inside (so a won dispute leaves the refund
    # standing); the customer never got back more than the order's amount.
    return OrderOut.model_validate(order).model_copy(
        update={
            "credits": credits.to_credits(order.credits),
            "refunded_amount": min(order.refunded_amount, order.amount),
        }
    )


@router.post("/orders/create-order", response_model=RazorpayOrderOut, description=IDEMPOTENCY_DOC)
async def create_razorpay_order(
    body: CreateOrderIn,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    async def produce() -> RazorpayOrderOut:
        created = await checkout.create_razorpay_order(session, container, user, body.plan_id)
        assert created.order.provider_order_id is not None
        return RazorpayOrderOut(
            order_id=created.order.id,
            key_id=created.key_id,
            razorpay_order_id=created.order.provider_order_id,
            amount=created.order.amount,
            currency=created.order.currency,
            credits=credits.to_credits(created.order.credits),
        )

    return await idempotent.respond(200, produce)


@router.post("/orders/verify-order", response_model=OrderVerifiedOut)
async def verify_razorpay_order(
    body: VerifyOrderIn, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> OrderVerifiedOut:
    """Razorpay Checkout's handler result: the signature is checked and the plan credited (once)."""
    order = await checkout.verify_razorpay_payment(
        session,
        container,
        user,
        order_id=body.razorpay_order_id,
        payment_id=body.razorpay_payment_id,
        signature=body.razorpay_signature,
    )
    balance = await credits.balance_of(session, user.id)
    return OrderVerifiedOut(success=True, order=order_out(order), credits=credits.to_credits(balance))


@router.post("/payment/create-checkout", response_model=CheckoutOut, description=IDEMPOTENCY_DOC)
async def create_checkout(
    body: CheckoutIn,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    key = idempotent.key or ""

    async def produce() -> CheckoutOut:
        order = await checkout.create_checkout(
            session,
            container,
            user,
            provider=Provider(body.provider),
            plan_ref=body.plan_id,
            custom_credits=body.credits,
            currency=body.currency.upper(),
            idempotency_key=key,
        )
        return _checkout_out(order)

    return await idempotent.respond(200, produce)


@router.post("/payment/subscribe", response_model=CheckoutOut, description=IDEMPOTENCY_DOC)
async def subscribe(
    body: SubscribeIn,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    key = idempotent.key or ""

    async def produce() -> CheckoutOut:
        order = await checkout.subscribe(session, container, user, body.plan_id, body.currency.upper(), key)
        return _checkout_out(order)

    return await idempotent.respond(200, produce)


def _checkout_out(order: Order) -> CheckoutOut:
    assert order.checkout_url is not None
    assert order.provider_order_id is not None
    return CheckoutOut(
        order_id=order.id,
        provider=order.provider,
        checkout_url=order.checkout_url,
        session_id=order.provider_order_id,
    )


@router.get("/payment/orders", response_model=list[OrderOut])
async def my_orders(user: CurrentUser, session: SessionDep) -> list[OrderOut]:
    return [order_out(order) for order in await orders.list_orders(session, user)]

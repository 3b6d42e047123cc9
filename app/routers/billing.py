from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app.dependencies import ContainerDep, CurrentUser, IdempotentDep, SessionDep, SettingsDep
from app.models import BillingProfile, Order, Provider
from app.schemas.billing import (
    BillingDetailsIn,
    BillingDetailsOut,
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
from app.schemas.errors import error_responses
from app.services import catalogue, credits
from app.services.billing import billing_details, checkout, invoice_pdf, orders

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


@router.post(
    "/orders/create-order",
    response_model=RazorpayOrderOut,
    description=IDEMPOTENCY_DOC,
    responses=error_responses(404, 409, 503),
)
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


@router.post("/orders/verify-order", response_model=OrderVerifiedOut, responses=error_responses(400, 503))
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


@router.post(
    "/payment/create-checkout",
    response_model=CheckoutOut,
    description=IDEMPOTENCY_DOC,
    responses=error_responses(404, 409, 503),
)
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


@router.post(
    "/payment/subscribe",
    response_model=CheckoutOut,
    description=IDEMPOTENCY_DOC,
    responses=error_responses(404, 409, 503),
)
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


@router.get(
    "/payment/orders/{order_id}/invoice",
    response_class=Response,
    responses={
        **error_responses(404),
        200: {"content": {"application/pdf": {}}, "description": "The tax invoice (PDF)."},
    },
)
async def order_invoice(
    order_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Response:
    """The tax invoice of one of your paid orders, as a PDF named after its number. Another user's order
    is 404; an order that was never paid is 409 `order_not_paid`."""
    invoice = await invoice_pdf.download(session, settings, user, order_id)
    return Response(
        invoice.content,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="invoice-{invoice.number}.pdf"',
            "Cache-Control": "private, no-store",
        },
    )


def billing_details_out(profile: BillingProfile | None) -> BillingDetailsOut:
    if profile is None:
        return BillingDetailsOut(name=None, country=None, vat_number=None, vat_verified=False)
    return BillingDetailsOut(
        name=profile.name,
        country=profile.country,
        vat_number=profile.vat_number,
        vat_verified=profile.vat_verified_at is not None,
    )


@router.get("/users/me/billing-details", response_model=BillingDetailsOut)
async def my_billing_details(user: CurrentUser, session: SessionDep) -> BillingDetailsOut:
    """Who your tax invoices are made out to (all empty until you save them)."""
    return billing_details_out(await billing_details.get(session, user))


@router.put("/users/me/billing-details", response_model=BillingDetailsOut)
async def save_billing_details(
    body: BillingDetailsIn, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> BillingDetailsOut:
    """Replace who the invoices of your later payments are made out to (issued invoices keep theirs). A
    VAT number must be a well-formed EU one of `country` (422 `invalid_vat_number`); with
    VIES_CHECK_ENABLED it is also checked online (see the README's Invoices and VAT)."""
    details = billing_details.BillingDetails(body.name, body.country, body.vat_number)
    saved = await billing_details.save(session, container.settings, container.vat_checker, user, details)
    return billing_details_out(saved)

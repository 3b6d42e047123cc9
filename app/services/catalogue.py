"""The plans on sale: credit packs and the Pro subscription, each with a price per currency."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.errors import AppError, Conflict, NotFound
from app.models import AuditAction, Plan, PlanKind, PlanPrice, Provider, User
from app.repositories.billing import PlanRepository
from app.services import audit

log = structlog.get_logger("app.catalogue")

# Razorpay settles in rupees for our merchants; Stripe takes any currency; Dodo sells products priced in
# its own dashboard, so it only offers plans mapped to a Dodo product.
RAZORPAY_CURRENCIES = frozenset({"INR"})


@dataclass(frozen=True)
class PricedPlan:
    plan: Plan
    prices: list[PlanPrice]

    def price(self, currency: str) -> PlanPrice | None:
        return next((price for price in self.prices if price.currency == currency.upper()), None)


def providers_for(ctx: Container, plan: Plan, currency: str) -> list[str]:
    providers = []
    if ctx.razorpay is not None and currency in RAZORPAY_CURRENCIES and plan.kind == "credit_pack":
        providers.append(Provider.razorpay.value)
    if ctx.stripe is not None:
        providers.append(Provider.stripe.value)
    if ctx.dodo is not None and plan.dodo_product_id and currency == ctx.settings.dodo_currency:
        providers.append(Provider.dodo.value)
    return providers


async def active_plans(session: AsyncSession) -> list[PricedPlan]:
    return [PricedPlan(plan, prices) for plan, prices in await PlanRepository(session).list_active()]


async def get_active_plan(session: AsyncSession, plan_id: uuid.UUID | str) -> PricedPlan:
    """By id or by code ("basic"): the seed apps' frontends send either."""
    plan = await get_plan(session, plan_id)
    if not plan.is_active:
        raise NotFound("No such plan.")
    prices = (await PlanRepository(session).prices_for([plan.id])).get(plan.id, [])
    return PricedPlan(plan, prices)


async def get_plan(session: AsyncSession, plan_ref: uuid.UUID | str) -> Plan:
    """Any plan, on sale or not (renewals of a retired plan still need it)."""
    repository = PlanRepository(session)
    try:
        plan = await repository.get(uuid.UUID(str(plan_ref)))
    except ValueError:
        plan = await repository.get_by_code(str(plan_ref))
    if plan is None:
        raise NotFound("No such plan.")
    return plan


async def apply_usd_price_settings(session: AsyncSession, overrides: dict[str, int]) -> None:
    """PLAN_PRICES_USD over the seeded USD prices: the operator sets prices without a migration."""
    repository = PlanRepository(session)
    for code, cents in overrides.items():
        plan = await repository.get_by_code(code)
        if plan is None:
            log.warning("catalogue.unknown_plan_in_settings", code=code)
            continue
        await repository.set_price(plan.id, "USD", cents)


# --- administration: plans and prices --------------------------------------------------------------
#
# A plan is never deleted: orders, subscriptions and invoices point at it. Retiring it (is_active false)
# takes it off sale (GET /plans, new checkouts) while its orders, late webhooks and subscription renewals
# keep working, because they find it by id with `get_plan`.


class PlanCodeTaken(Conflict):
    code = "plan_code_taken"
    default_detail = "Another plan already has this code."


class InvalidPlan(AppError):
    status_code = 422
    code = "invalid_plan"
    default_detail = "The plan's fields do not fit together."


async def list_all_plans(session: AsyncSession) -> list[PricedPlan]:
    return [PricedPlan(plan, prices) for plan, prices in await PlanRepository(session).list_all()]


async def _priced(session: AsyncSession, plan: Plan) -> PricedPlan:
    prices = (await PlanRepository(session).prices_for([plan.id])).get(plan.id, [])
    return PricedPlan(plan, prices)


def _check_shape(plan: Plan) -> None:
    """A subscription renews every `interval` and may grant a plan; a pack has neither."""
    if plan.kind == PlanKind.subscription.value and plan.interval is None:
        raise InvalidPlan("A subscription needs an interval (month or year).")
    if plan.kind == PlanKind.credit_pack.value and (
        plan.interval is not None or plan.grants_plan is not None
    ):
        raise InvalidPlan("A credit pack has no interval and grants no plan.")


async def create_plan(
    session: AsyncSession, admin: User, fields: dict[str, Any], prices: dict[str, int]
) -> PricedPlan:
    """409 plan_code_taken when the code (case-insensitive) is in use, retired plans included."""
    repository = PlanRepository(session)
    if await repository.code_taken(fields["code"]):
        raise PlanCodeTaken()
    plan = Plan(**fields)
    _check_shape(plan)
    try:
        async with session.begin_nested():
            await repository.add(plan)
    except IntegrityError as exc:  # created by a concurrent request since the check
        raise PlanCodeTaken() from exc
    await repository.replace_prices(plan.id, prices)
    await audit.record(
        session,
        action=AuditAction.plan_created,
        actor_id=admin.id,
        details={"plan_id": plan.id, "code": plan.code, "currencies": ",".join(sorted(prices))},
    )
    log.info("catalogue.plan_created", plan_id=str(plan.id), code=plan.code)
    return await _priced(session, plan)


async def update_plan(
    session: AsyncSession,
    admin: User,
    plan_id: uuid.UUID,
    changes: dict[str, Any],
    prices: dict[str, int] | None,
) -> PricedPlan:
    """Change the fields sent; `prices`, when sent, replaces the plan's whole price list. The code and
    the kind stay (frontends and past orders name them)."""
    repository = PlanRepository(session)
    plan = await repository.get(plan_id)
    if plan is None:
        raise NotFound("No such plan.")
    for name, value in changes.items():
        setattr(plan, name, value)
    _check_shape(plan)
    await session.flush()
    if prices is not None:
        await repository.replace_prices(plan.id, prices)
    fields = sorted(changes) + (["prices"] if prices is not None else [])
    action = AuditAction.plan_retired if changes.get("is_active") is False else AuditAction.plan_updated
    await audit.record(
        session,
        action=action,
        actor_id=admin.id,
        details={"plan_id": plan.id, "code": plan.code, "fields": ",".join(fields)},
    )
    return await _priced(session, plan)


async def retire_plan(session: AsyncSession, admin: User, plan_id: uuid.UUID) -> PricedPlan:
    """Off sale from now on; existing orders and subscriptions keep working. Retiring twice is a no-op."""
    return await update_plan(session, admin, plan_id, {"is_active": False}, None)

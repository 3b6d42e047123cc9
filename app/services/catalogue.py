"""The plans on sale: credit packs and the Pro subscription, each with a price per currency."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.errors import NotFound
from app.models import Plan, PlanPrice, Provider
from app.repositories.billing import PlanRepository

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

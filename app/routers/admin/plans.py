"""CRUD of the plans on sale and their prices: /admin/plans (GET /plans shows the active ones to
everybody). Plans are retired, never deleted: their orders and subscriptions keep pointing at them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.dependencies import AdminUser, SessionDep
from app.schemas.admin import PlanAdminOut, PlanCreateIn, PlanUpdateIn, PriceAdminOut, PriceIn
from app.schemas.errors import error_responses
from app.services import catalogue, credits

router = APIRouter()


def plan_admin_out(priced: catalogue.PricedPlan) -> PlanAdminOut:
    plan = priced.plan
    return PlanAdminOut(
        id=plan.id,
        code=plan.code,
        name=plan.name,
        description=plan.description,
        kind=plan.kind,
        credits=credits.to_credits(plan.credits),
        grants_plan=plan.grants_plan,
        interval=plan.interval,
        dodo_product_id=plan.dodo_product_id,
        is_active=plan.is_active,
        sort_order=plan.sort_order,
        prices=[PriceAdminOut(currency=price.currency, amount=price.amount) for price in priced.prices],
        created_at=plan.created_at,
        updated_at=plan.updated_at,
    )


def _prices(prices: list[PriceIn]) -> dict[str, int]:
    return {price.currency: price.amount for price in prices}


@router.get("/plans", response_model=list[PlanAdminOut])
async def list_plans(session: SessionDep) -> list[PlanAdminOut]:
    """Every plan, retired ones included, in catalogue order."""
    return [plan_admin_out(priced) for priced in await catalogue.list_all_plans(session)]


@router.post("/plans", status_code=201, response_model=PlanAdminOut, responses=error_responses(409))
async def create_plan(body: PlanCreateIn, admin: AdminUser, session: SessionDep) -> PlanAdminOut:
    """409 `plan_code_taken` when the code is in use (retired plans included); 422 `invalid_plan` for a
    subscription without an interval or a pack with one."""
    fields = body.model_dump(exclude={"prices", "credits"})
    fields["credits"] = credits.to_millicredits(body.credits)
    priced = await catalogue.create_plan(session, admin, fields, _prices(body.prices))
    return plan_admin_out(priced)


@router.patch("/plans/{plan_id}", response_model=PlanAdminOut, responses=error_responses(404))
async def update_plan(
    plan_id: uuid.UUID, body: PlanUpdateIn, admin: AdminUser, session: SessionDep
) -> PlanAdminOut:
    """Change the fields sent (the code and kind stay); `prices` replaces the whole list. Orders keep
    the amount they were made with."""
    changes = body.model_dump(exclude_unset=True, exclude={"prices", "credits"})
    if body.credits is not None:
        changes["credits"] = credits.to_millicredits(body.credits)
    prices = _prices(body.prices) if body.prices is not None else None
    return plan_admin_out(await catalogue.update_plan(session, admin, plan_id, changes, prices))


@router.post("/plans/{plan_id}/retire", response_model=PlanAdminOut, responses=error_responses(404))
async def retire_plan(plan_id: uuid.UUID, admin: AdminUser, session: SessionDep) -> PlanAdminOut:
    """Off sale for new checkouts; its orders, late webhooks and subscription renewals keep working.
    `PATCH {"is_active": true}` puts it back on sale."""
    return plan_admin_out(await catalogue.retire_plan(session, admin, plan_id))

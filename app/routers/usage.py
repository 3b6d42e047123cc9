from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from app.dependencies import CurrentUser, SessionDep
from app.schemas.design import UsageDayOut, UsageOut, UsageTotalOut
from app.services import usage
from app.services.credits import to_credits

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me/usage", response_model=UsageOut)
async def my_usage(
    user: CurrentUser,
    session: SessionDep,
    from_: Annotated[
        date | None, Query(alias="from", description="First UTC day (default: 29 days before `to`).")
    ] = None,
    to: Annotated[date | None, Query(description="Last UTC day, included (default: today).")] = None,
) -> UsageOut:
    """What you spent credits on, per action and UTC day (at most 366 days), with totals per action.
    `count` counts successes; `failed` counts attempts that failed and cost nothing."""
    summary = await usage.summary(session, user.id, from_, to)
    return UsageOut(
        from_=summary.start,
        to=summary.end,
        days=[
            UsageDayOut(
                day=date.fromisoformat(day.day),
                action=day.action,
                count=day.count,
                failed=day.failed,
                credits=to_credits(day.credits),
            )
            for day in summary.days
        ],
        totals=[
            UsageTotalOut(
                action=total.action, count=total.count, failed=total.failed, credits=to_credits(total.credits)
            )
            for total in summary.totals
        ],
        credits=to_credits(summary.credits),
    )

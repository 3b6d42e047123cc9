"""Plan quotas of AI clones, enforced on the server: how many personal models a plan may ever train, and
how many image generations it may start per UTC day (CLONE_MODEL_QUOTAS, CLONE_GENERATION_DAILY_QUOTAS;
a plan missing from a setting gets its `free` entry, `unlimited` means no bound).

Past a lifetime quota the answer is 403 `plan_required`, naming the plans that allow more; past a daily
quota, 429 `quota_exceeded` with the moment it resets (and Retry-After); a quota of 0 is a feature the
plan does not include (403 `plan_required`). How many images one generation may ask for is a plan
rule too (CLONE_GENERATION_MAX_OUTPUTS): more than the plan allows is 403 `plan_required`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.base import utcnow
from app.errors import AppError
from app.models import CloneModel, CloneModelStatus, Job, JobKind, JobStatus, User

# Image generations counted by the daily quota: hairstyle try-ons and text to image (one per request).
GENERATION_KINDS = frozenset({JobKind.generate.value, JobKind.generation.value})


class QuotaName(StrEnum):
    models = "models"
    generations = "generations"


class Period(StrEnum):
    lifetime = "lifetime"
    day = "day"


PERIODS = {QuotaName.models: Period.lifetime, QuotaName.generations: Period.day}


class PlanRequired(AppError):
    status_code = 403
    code = "plan_required"


class QuotaExceeded(AppError):
    status_code = 429
    code = "quota_exceeded"


@dataclass(frozen=True)
class QuotaView:
    name: QuotaName
    period: Period
    used: int
    total: int | None  # None: unlimited
    resets_at: datetime | None

    @property
    def remaining(self) -> int | None:
        return None if self.total is None else max(0, self.total - self.used)


def _table(settings: Settings, name: QuotaName) -> dict[str, int | None]:
    if name is QuotaName.models:
        return settings.clone_model_quotas
    return settings.clone_generation_daily_quotas


def limit_for(settings: Settings, name: QuotaName, plan: str) -> int | None:
    table = _table(settings, name)
    return table.get(plan, table["free"])


def _day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


async def _used(session: AsyncSession, name: QuotaName, user_id: object, now: datetime) -> int:
    if name is QuotaName.models:
        # Every model the user has that did not fail or get cancelled (failures give the slot back).
        statement = (
            select(func.count())
            .select_from(CloneModel)
            .where(
                CloneModel.user_id == user_id,
                CloneModel.status.not_in([CloneModelStatus.failed.value, CloneModelStatus.canceled.value]),
            )
        )
    else:
        statement = (
            select(func.count())
            .select_from(Job)
            .where(
                Job.user_id == user_id,
                Job.kind.in_(GENERATION_KINDS),
                Job.status != JobStatus.failed.value,
                Job.created_at >= _day_start(now),
            )
        )
    return int(await session.scalar(statement) or 0)


async def view(session: AsyncSession, settings: Settings, user: User, name: QuotaName) -> QuotaView:
    now = utcnow()
    period = PERIODS[name]
    resets_at = _day_start(now) + timedelta(days=1) if period is Period.day else None
    used = await _used(session, name, user.id, now)
    return QuotaView(name, period, used, limit_for(settings, name, user.plan), resets_at)


async def all_for(session: AsyncSession, settings: Settings, user: User) -> list[QuotaView]:
    return [await view(session, settings, user, name) for name in QuotaName]


async def require(
    session: AsyncSession, settings: Settings, user: User, name: QuotaName, amount: int = 1
) -> None:
    """Refuse (403 or 429) unless `amount` more fit in the user's quota. The caller holds the user's lock
    (users.lock_open) so concurrent requests cannot both take the last slot."""
    quota = await view(session, settings, user, name)
    if quota.total is None or quota.used + amount <= quota.total:
        return
    if quota.period is Period.lifetime or quota.total == 0:
        needed = quota.used + amount
        better = sorted(
            plan for plan, total in _table(settings, name).items() if total is None or total >= needed
        )
        plans = ", ".join(better) if better else "none"
        raise PlanRequired(
            f"Your plan ({user.plan}) allows {quota.total} {name.value}; upgrade to: {plans}.",
            extra={"quota": name.value, "plan": user.plan, "plans": better},
        )
    assert quota.resets_at is not None
    wait = math.ceil((quota.resets_at - utcnow()).total_seconds())
    raise QuotaExceeded(
        f"Your plan ({user.plan}) allows {quota.total} {name.value} a day; the quota resets at "
        f"{quota.resets_at.isoformat()}.",
        headers={"Retry-After": str(max(1, wait))},
        extra={"quota": name.value, "plan": user.plan, "resets_at": quota.resets_at.isoformat()},
    )


def require_outputs(settings: Settings, user: User, num_outputs: int) -> None:
    """Refuse (403 naming the plans that allow it) a generation asking for more images than the user's
    plan makes at once."""
    table = settings.clone_generation_max_outputs
    allowed = table.get(user.plan, table["free"])
    if allowed is None or num_outputs <= allowed:
        return
    better = sorted(plan for plan, most in table.items() if most is None or most >= num_outputs)
    plans = ", ".join(better) if better else "none"
    raise PlanRequired(
        f"Your plan ({user.plan}) makes at most {allowed} image(s) per generation; for {num_outputs}, "
        f"upgrade to: {plans}.",
        extra={"quota": "outputs", "plan": user.plan, "max": allowed, "plans": better},
    )

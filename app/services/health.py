"""Readiness: can this process serve requests that need its dependencies?"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from app.container import Container
from app.services import webhook_inbox

log = structlog.get_logger("app.health")


FAILED_BACKLOG = "failed_backlog"


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # a sentence per failing check

    @property
    def failing(self) -> list[str]:
        return [name for name, state in self.checks.items() if state != "ok"]

    def explain(self) -> str:
        return "; ".join(self.reasons.get(name, f"{name} {self.checks[name]}") for name in self.failing)


async def check_readiness(ctx: Container, timeout_seconds: float) -> Readiness:
    """The database, and Redis when it holds the rate limits (REDIS_URL), each within the timeout; then
    the webhook inbox: failed events piling up (READYZ_FAILED_WEBHOOK_*) mean payments not credited."""
    checks = {"database": await _check("database", ctx.database.ping(), timeout_seconds)}
    reasons: dict[str, str] = {}
    if ctx.rate_limiter.uses_redis:
        checks["redis"] = await _check("redis", _redis_ping(ctx), timeout_seconds)
    threshold = ctx.settings.readyz_failed_webhook_count
    if threshold > 0 and checks["database"] == "ok":
        age = timedelta(seconds=ctx.settings.readyz_failed_webhook_age_seconds)
        failed = await _failed_webhooks(ctx, age, timeout_seconds)
        if failed is None:
            checks["webhooks"] = "unreachable"
        elif failed >= threshold:
            checks["webhooks"] = FAILED_BACKLOG
            reasons["webhooks"] = (
                f"{failed} webhook event(s) failed more than {int(age.total_seconds())} s ago"
                " (GET /api/v1/admin/webhooks?status=failed)"
            )
        else:
            checks["webhooks"] = "ok"
    return Readiness(checks, reasons)


async def _failed_webhooks(ctx: Container, age: timedelta, timeout_seconds: float) -> int | None:
    async def count() -> int:
        async with ctx.database.session_scope() as session:
            return await webhook_inbox.failed_backlog(session, age)

    try:
        return await asyncio.wait_for(count(), timeout=timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported as such
        log.warning("readiness.unreachable", dependency="webhooks", error_type=type(exc).__name__)
        return None


async def _redis_ping(ctx: Container) -> None:
    if not await ctx.rate_limiter.storage_answers():
        raise ConnectionError("redis did not answer PING")


async def _check(name: str, probe: Awaitable[None], timeout_seconds: float) -> str:
    try:
        await asyncio.wait_for(probe, timeout=timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported as such
        log.warning("readiness.unreachable", dependency=name, error_type=type(exc).__name__)
        return "unreachable"
    return "ok"

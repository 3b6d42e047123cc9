"""Readiness: can this process serve requests that need its dependencies?"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

import structlog

from app.container import Container

log = structlog.get_logger("app.health")


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def failing(self) -> list[str]:
        return [name for name, state in self.checks.items() if state != "ok"]


async def check_readiness(ctx: Container, timeout_seconds: float) -> Readiness:
    """The database, and Redis when it holds the rate limits (REDIS_URL), each within the timeout."""
    checks = {"database": await _check("database", ctx.database.ping(), timeout_seconds)}
    if ctx.rate_limiter.uses_redis:
        checks["redis"] = await _check("redis", _redis_ping(ctx), timeout_seconds)
    return Readiness(checks)


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

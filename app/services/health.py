"""Readiness: can this process serve requests that need its dependencies?"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from app.db.session import Database

log = structlog.get_logger("app.health")


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def failing(self) -> list[str]:
        return [name for name, state in self.checks.items() if state != "ok"]


async def check_readiness(database: Database, timeout_seconds: float) -> Readiness:
    try:
        await asyncio.wait_for(database.ping(), timeout=timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported as such
        log.warning("readiness.database_unreachable", error_type=type(exc).__name__)
        return Readiness({"database": "unreachable"})
    return Readiness({"database": "ok"})

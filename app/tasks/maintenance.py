"""Periodic housekeeping inside the API process: deliver due emails, sweep expired token rows."""

from __future__ import annotations

import asyncio

import structlog

from app.container import Container
from app.services import email as email_service
from app.services import sessions_sweep

log = structlog.get_logger("app.tasks.maintenance")


async def run_once(container: Container) -> None:
    await email_service.deliver_due(container.database, container.email)
    async with container.database.session_scope() as session:
        swept = await sessions_sweep.sweep_expired(session)
    if any(swept.values()):
        log.info("maintenance.swept", **swept)


async def run_forever(container: Container, interval_seconds: float) -> None:
    while True:
        try:
            await run_once(container)
        except Exception:
            log.exception("maintenance.failed")
        await asyncio.sleep(interval_seconds)

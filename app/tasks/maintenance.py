"""Periodic housekeeping inside the API process: deliver due emails, recover abandoned jobs, poll the
model trainings Replicate's webhook has not ended, sweep expired token rows and images past their
retention."""

from __future__ import annotations

import asyncio

import structlog

from app.container import Container
from app.services import audit, sessions_sweep
from app.services import email as email_service
from app.services import images as images_service
from app.services.clones import training as clone_training
from app.tasks.recovery import recover_jobs

log = structlog.get_logger("app.tasks.maintenance")


async def run_once(container: Container) -> None:
    await email_service.deliver_due(container.database, container.email)
    await recover_jobs(container)
    await clone_training.poll(container)  # trainings whose webhook never came
    async with container.database.session_scope() as session:
        swept = await sessions_sweep.sweep_expired(session)
        swept["audit_logs"] = await audit.sweep_expired(session, container.settings.audit_log_retention_days)
    if any(swept.values()):
        log.info("maintenance.swept", **swept)
    await images_service.sweep_expired(container)


async def run_forever(container: Container, interval_seconds: float) -> None:
    while True:
        try:
            await run_once(container)
        except Exception:
            log.exception("maintenance.failed")
        await asyncio.sleep(interval_seconds)

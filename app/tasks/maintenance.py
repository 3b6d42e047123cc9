"""Periodic housekeeping inside the API process: check the alert conditions (their delivery runs on its
own), deliver due emails, recover abandoned jobs, poll the model trainings Replicate's webhook has not
ended, sweep expired token rows and images past their retention."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from app.container import Container
from app.services import alerts, audit, sessions_sweep
from app.services import email as email_service
from app.services import images as images_service
from app.services.clones import training as clone_training
from app.tasks.recovery import recover_jobs

log = structlog.get_logger("app.tasks.maintenance")


async def _alerts(container: Container) -> None:
    await alerts.run(container)


async def _emails(container: Container) -> None:
    await email_service.deliver_due(container.database, container.email)


async def _sweep_rows(container: Container) -> None:
    async with container.database.session_scope() as session:
        swept = await sessions_sweep.sweep_expired(session)
        swept["audit_logs"] = await audit.sweep_expired(session, container.settings.audit_log_retention_days)
    if any(swept.values()):
        log.info("maintenance.swept", **swept)


# In order; each step runs whatever the ones before it did (a failing step is logged and skipped).
STEPS: tuple[tuple[str, Callable[[Container], Awaitable[object]]], ...] = (
    ("alerts", _alerts),
    ("emails", _emails),
    ("recover_jobs", recover_jobs),
    ("poll_trainings", clone_training.poll),  # trainings whose webhook never came
    ("sweep_rows", _sweep_rows),
    ("sweep_images", images_service.sweep_expired),
)


async def run_once(container: Container) -> None:
    for name, step in STEPS:
        try:
            await step(container)
        except Exception:
            log.exception("maintenance.step_failed", step=name)


async def run_forever(container: Container, interval_seconds: float) -> None:
    while True:
        await run_once(container)
        await asyncio.sleep(interval_seconds)

"""Periodic housekeeping inside the API process: deliver due emails, recover abandoned jobs, sweep
expired token rows and images past their retention."""

from __future__ import annotations

import asyncio
import uuid

import structlog

from app.container import Container
from app.services import email as email_service
from app.services import images as images_service
from app.services import jobs as jobs_service
from app.services import sessions_sweep

log = structlog.get_logger("app.tasks.maintenance")
_running: set[asyncio.Task[None]] = set()


def run_in_background(container: Container, job_ids: list[uuid.UUID]) -> None:
    for job_id in job_ids:
        task = asyncio.create_task(jobs_service.run(container, job_id), name=f"job-{job_id}")
        _running.add(task)  # keep a reference until it finishes
        task.add_done_callback(_running.discard)


async def recover_jobs(container: Container) -> None:
    run_in_background(container, await jobs_service.recover(container))


async def run_once(container: Container) -> None:
    await email_service.deliver_due(container.database, container.email)
    await recover_jobs(container)
    async with container.database.session_scope() as session:
        swept = await sessions_sweep.sweep_expired(session)
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

"""Crash recovery: jobs a dead process left behind (PROCESSING past their lease, PENDING that nobody
picked up) are run again or failed and refunded; at startup and on every housekeeping round."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog

from app.container import Container
from app.db.base import utcnow
from app.models import JobStatus
from app.repositories.images import JobRepository
from app.services import images as images_service
from app.services import jobs
from app.tasks import dispatch

log = structlog.get_logger("app.jobs")


async def recover(ctx: Container, limit: int = 100) -> list[uuid.UUID]:
    """Jobs left behind by a crash: re-run those with attempts left, fail (and refund) the others.
    A job a client waited for is always failed: that client was answered (or lost its connection)
    already, and a result nobody receives must not be charged. Returns the ids to re-run; the caller
    schedules them."""
    now = utcnow()
    lease = timedelta(seconds=ctx.settings.job_lease_seconds)
    async with ctx.database.session_scope() as session:
        stale = await JobRepository(session).stale(now, pending_before=now - lease, limit=limit)
        plan = [(job.id, job.attempts, bool(job.options.get(jobs.WAITED))) for job in stale]
    rerun, failed = [], 0
    for job_id, attempts, waited in plan:
        if not waited and attempts < ctx.settings.job_max_attempts:
            rerun.append(job_id)
            continue
        try:
            await _fail_left_behind(ctx, job_id, attempts, waited)
        except Exception:
            # One job that cannot be ended (a bug, a row the database refuses) must not hold up the others'
            # recovery, nor the server's start-up, which recovers first: it waits for the next round.
            log.exception("job.recovery_failed", job_id=str(job_id))
            continue
        failed += 1
    if plan:
        log.info("jobs.recovered", rerun=len(rerun), failed=failed)
    return rerun


async def _fail_left_behind(ctx: Container, job_id: uuid.UUID, attempts: int, waited: bool) -> None:
    if waited:
        message = "The request waiting for this job ended before it finished; nothing was charged."
        ended = await jobs.fail(ctx, job_id, jobs.CANCELLED, message, attempts, None)
    else:
        message = "The job was interrupted too many times."
        ended = await jobs.fail(ctx, job_id, "abandoned", message, attempts, None)
    if ended.status == JobStatus.failed.value and ended.user_id is not None:
        # Its runner may have stored outputs before it stopped.
        await images_service.delete_objects(ctx, images_service.possible_output_keys(ended))


async def recover_jobs(ctx: Container) -> None:
    """Recover, and hand over again what may run again: run in this process (JOB_QUEUE=inline) or sent
    to the queue once more (its message may have been lost; a duplicate is a no-op for the worker)."""
    await dispatch.dispatcher_for(ctx).resume(await recover(ctx))

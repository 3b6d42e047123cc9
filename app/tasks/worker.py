"""A queue worker process (`pixforge worker`, JOB_QUEUE=redis|rabbitmq): Dramatiq imports this module as
its broker module in each worker process it starts. Every process builds its own collaborators (database
pool, storage, engines: local inference concurrency is LOCAL_ENGINE_CONCURRENCY per process) when it
boots, and runs each delivered job id the way the API process runs one inline (app/tasks/runner.py).

A message is acknowledged when `run_job` returns, so a worker killed mid-job leaves it to be delivered
again (by Redis after JOB_QUEUE_HEARTBEAT_TIMEOUT_SECONDS, by RabbitMQ when the connection drops). The
job's lease decides what a delivery does: a job that ended is left alone (a duplicate, or the
redelivery of a job that completed before its worker died: charged once), a free one is run, and one
whose lease another worker still holds is sent again for when that lease runs out, since the holder may
be the dead worker."""

from __future__ import annotations

import uuid

import structlog

from app.config import get_settings
from app.container import Container
from app.db.session import Database
from app.integrations.job_queue import build_job_queue, declare_job_actor
from app.logging import configure_logging
from app.services import jobs
from app.tasks import runner
from app.tasks.dispatch import QueueDispatcher

log = structlog.get_logger("app.jobs")
# A lease that ran out is claimable at once; this margin keeps a redelivery from arriving a hair early.
LEASE_MARGIN_SECONDS = 1.0
# A run that raised (the database down) is delivered again this many times, with backoff.
MAX_RETRIES = 5

_container: Container | None = None


def _boot() -> None:
    global _container  # one set of collaborators per worker process
    settings = get_settings()
    _container = Container.build(settings, Database.from_settings(settings))
    log.info("worker.ready", queue=settings.job_queue, queue_name=settings.job_queue_name)


async def _shutdown() -> None:
    global _container
    if _container is not None:
        await _container.aclose()
        await _container.database.dispose()
        _container = None


async def run_job(job_id: str) -> None:
    """The actor: run the job whose id the message carries, if its lease allows."""
    ctx = _container
    assert ctx is not None, "the worker's collaborators are built when it boots"
    await run_delivered(ctx, uuid.UUID(job_id))


async def run_delivered(ctx: Container, job_id: uuid.UUID) -> None:
    claim = await jobs.claim(ctx, job_id)
    if claim is None:
        held = await jobs.lease_left(ctx, job_id)
        if held is not None and ctx.job_queue is not None:
            log.info("job.held_elsewhere", job_id=str(job_id), retry_in=round(held, 1))
            await QueueDispatcher(ctx.job_queue).send(job_id, held + LEASE_MARGIN_SECONDS)
        return
    try:
        await runner.execute(ctx, claim)
    except jobs.CompletionNotRecorded:
        return  # logged; the job ended failed (or is the recovery's)


def _broker() -> object:
    settings = get_settings()
    configure_logging(settings)
    queue = build_job_queue(settings)
    if queue is None:
        raise SystemExit("pixforge worker needs JOB_QUEUE=redis or JOB_QUEUE=rabbitmq")
    declare_job_actor(
        queue,
        run_job,
        # A run past its lease may be claimed by another worker anyway: stop it there.
        time_limit_seconds=settings.job_lease_seconds,
        max_retries=MAX_RETRIES,
        on_boot=_boot,
        on_shutdown=_shutdown,
    )
    return queue.broker


# What Dramatiq's CLI imports (`app.tasks.worker:broker`).
broker = _broker()

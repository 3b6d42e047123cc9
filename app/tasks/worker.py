"""A queue worker process (`pixforge worker`, JOB_QUEUE=redis|rabbitmq): Dramatiq imports this module as
its broker module in each worker process it starts. Every process builds its own collaborators (database
pool, storage, engines: local inference concurrency is LOCAL_ENGINE_CONCURRENCY per process) when it
boots, and runs each delivered job id with `runner.run_delivered`.

A message is acknowledged when `run_job` returns, so a worker killed mid-job leaves it to be delivered
again (by Redis after JOB_QUEUE_HEARTBEAT_TIMEOUT_SECONDS, by RabbitMQ when the connection drops)."""

from __future__ import annotations

import uuid

import structlog

from app.config import get_settings
from app.container import Container
from app.db.session import Database
from app.integrations.dramatiq_queue import declare_job_actor
from app.integrations.job_queue import build_job_queue
from app.logging import configure_logging
from app.tasks import runner

log = structlog.get_logger("app.jobs")
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
    await runner.run_delivered(ctx, uuid.UUID(job_id))


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

"""Where a submitted job runs: the dispatch boundary. Routers and services hand a committed job's id to
the process's `JobDispatcher` and do not know whether it runs here (JOB_QUEUE=inline, the default) or
on a Dramatiq worker (JOB_QUEUE=redis|rabbitmq, see app/tasks/worker.py).

A job is handed over only after the transaction that made it has committed: a worker must find its row.
The broker being down is found out before that commit (`ensure_open`): the request is answered 503 and
its transaction, the job row with its credit reservation, rolls back. Checking first, rather than
failing and refunding a committed job when the send after commit fails, leaves nothing behind (no failed
job in the user's history, no reserve/release pair in the ledger) and lets the request answer 503 at all:
an asynchronous submit's send runs after its response has gone. If the broker goes down between the
check and the send, the job stays PENDING and the recovery sends it again (app/tasks/recovery.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

import structlog
from fastapi import BackgroundTasks

from app.container import Container
from app.errors import ServiceUnavailable
from app.integrations.job_queue import JobQueue, QueueUnavailable
from app.tasks import runner

log = structlog.get_logger("app.jobs")
# A send after commit that fails is tried again this many times in all, 0.2 s, then 0.4 s apart.
SEND_ATTEMPTS = 3


class JobQueueUnavailable(ServiceUnavailable):
    code = "job_queue_unavailable"
    default_detail = "Jobs cannot be queued right now, so nothing was charged; retry shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "30"}, extra={"credits_charged": 0})


class JobDispatcher(Protocol):
    async def ensure_open(self) -> None:
        """Before the submitting transaction commits: raise JobQueueUnavailable (rolling it back) when a
        job submitted now could not be handed over."""

    def after_commit(self, background: BackgroundTasks, job_id: uuid.UUID) -> None:
        """Hand the job over once the request's transaction has committed (its session dependency has
        function scope, so the commit comes before any BackgroundTask)."""

    async def resume(self, job_ids: list[uuid.UUID]) -> None:
        """Hand over again jobs the recovery found (committed long ago)."""


class InlineDispatcher:
    """Today's runner: the job runs in this process, as a BackgroundTask of the request."""

    def __init__(self, ctx: Container) -> None:
        self.ctx = ctx

    async def ensure_open(self) -> None:
        return None

    def after_commit(self, background: BackgroundTasks, job_id: uuid.UUID) -> None:
        runner.run_after_commit(background, self.ctx, job_id)

    async def resume(self, job_ids: list[uuid.UUID]) -> None:
        runner.run_in_background(self.ctx, job_ids)


class QueueDispatcher:
    """The job's id goes to the broker; a worker process runs it."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    async def ensure_open(self) -> None:
        try:
            await asyncio.to_thread(self.queue.ping)
        except QueueUnavailable as exc:
            log.warning("job_queue.unavailable", error=str(exc))
            raise JobQueueUnavailable() from exc

    def after_commit(self, background: BackgroundTasks, job_id: uuid.UUID) -> None:
        background.add_task(self.send_or_leave, job_id)

    async def resume(self, job_ids: list[uuid.UUID]) -> None:
        for job_id in job_ids:
            await self.send_or_leave(job_id)

    async def send(self, job_id: uuid.UUID, delay_seconds: float = 0) -> None:
        """Queue the job now; JobQueueUnavailable if the broker refuses (after SEND_ATTEMPTS tries)."""
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                await asyncio.to_thread(self.queue.send, str(job_id), delay_seconds)
                return
            except QueueUnavailable as exc:
                if attempt == SEND_ATTEMPTS:
                    log.warning("job_queue.send_failed", job_id=str(job_id), error=str(exc))
                    raise JobQueueUnavailable() from exc
                await asyncio.sleep(0.2 * 2 ** (attempt - 1))

    async def send_or_leave(self, job_id: uuid.UUID) -> None:
        """Queue the job; if the broker will not have it, it stays PENDING for the recovery to send."""
        try:
            await self.send(job_id)
        except JobQueueUnavailable:
            log.warning("job_queue.left_for_recovery", job_id=str(job_id))


def dispatcher_for(ctx: Container) -> JobDispatcher:
    """The dispatcher JOB_QUEUE chose (the container's queue: None when inline)."""
    if ctx.job_queue is None:
        return InlineDispatcher(ctx)
    return QueueDispatcher(ctx.job_queue)

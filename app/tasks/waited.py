"""Jobs a client waits for on its request, made at most once per Idempotency-Key.

The job is submitted and committed at once (already claimed), then run here; every step is a unit of
work of its own, so a client queued for an engine holds no database connection. With a key, the first
request links its job to the key; a retry is answered from that job (its stored output, the balance the
first answer gave), told to wait while it runs, or runs the request again if the first one never
delivered a result for a reason that may pass (cancelled with its request, a provider or storage
outage). A request refused before making a job frees its key."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.db.retry import transient_database_error
from app.errors import AppError, ServiceUnavailable
from app.models import TERMINAL_STATUSES, Job, JobStatus
from app.services import idempotency, job_submission, jobs
from app.services.engines import JobWork, engine_for
from app.tasks import runner
from app.tasks.dispatch import JobQueueUnavailable, QueueDispatcher

log = structlog.get_logger("app.tasks.waited")
# A client waiting on a queued job reads its row after 50 ms, then 1.5 times later each time, up to 1 s.
POLL_FIRST_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0
# The failure code of a waited job the broker would not take.
QUEUE_UNAVAILABLE = JobQueueUnavailable.code


@dataclass(frozen=True)
class Answer:
    finished: jobs.FinishedJob
    replayed: bool  # the first request's answer, rebuilt from its job


async def wait_for(
    ctx: Container,
    user_id: uuid.UUID,
    job: job_submission.JobRequest,
    key: str | None = None,
    fingerprint: str = "",
) -> Answer:
    """Run the job and return it finished (a failed job raises its `job_failure`); with an
    Idempotency-Key `key` (and the request's `fingerprint`), at most once."""
    if key is None:
        return Answer(await run_now(ctx, user_id, job), replayed=False)
    settings = ctx.settings
    claim = await idempotency.claim_detached(
        ctx.database,
        user_id,
        key,
        fingerprint,
        settings.idempotency_key_ttl_seconds,
        settings.job_lease_seconds,
    )
    if isinstance(claim, idempotency.Earlier):
        earlier = await _earlier_answer(ctx, user_id, claim)
        if earlier is not None:
            return Answer(earlier, replayed=True)
        claim = await idempotency.take_over_detached(ctx.database, claim)
    return Answer(await _run_under_key(ctx, user_id, job, claim.record_id), replayed=False)


async def _run_under_key(
    ctx: Container, user_id: uuid.UUID, job: job_submission.JobRequest, record_id: uuid.UUID
) -> jobs.FinishedJob:
    async def link(session: AsyncSession, made: Job) -> None:
        await idempotency.link_job(session, record_id, made.id)

    try:
        finished = await run_now(ctx, user_id, job, on_submitted=link)
    except AppError as exc:
        if isinstance(exc, jobs.JobFailed):  # the job exists, failed: a retry is answered from it
            await idempotency.finish_detached(ctx.database, record_id, exc.status_code, {})
        else:
            await asyncio.shield(idempotency.release_detached(ctx.database, record_id))
        raise
    except BaseException:
        await asyncio.shield(idempotency.release_detached(ctx.database, record_id))
        raise
    await idempotency.finish_detached(ctx.database, record_id, 200, {"credits_millis": finished.balance})
    return finished


async def _earlier_answer(
    ctx: Container, user_id: uuid.UUID, earlier: idempotency.Earlier
) -> jobs.FinishedJob | None:
    """The first request's answer, rebuilt from its job; None when that job never delivered a result for
    a reason that may pass (the retry runs the request again). Any other failure is answered again."""
    assert earlier.job_id is not None
    try:
        finished = await jobs.result_of(ctx, user_id, earlier.job_id)
    except jobs.JobFailed as failure:
        if failure.reason == jobs.CANCELLED or failure.reason in jobs.RETRYABLE_CODES:
            return None
        raise
    if "credits_millis" in earlier.body:
        finished = replace(finished, balance=int(earlier.body["credits_millis"]))
    return finished


async def run_now(
    ctx: Container,
    user_id: uuid.UUID,
    job: job_submission.JobRequest,
    on_submitted: Callable[[AsyncSession, Job], Awaitable[None]] | None = None,
) -> jobs.FinishedJob:
    """Submit (committed at once), run here or on a queue worker, and return the finished job. A
    failed job raises its `job_failure`. `on_submitted` runs in the submitting transaction."""
    if ctx.job_queue is not None:
        return await _run_on_queue(ctx, QueueDispatcher(ctx.job_queue), user_id, job, on_submitted)
    job_id = uuid.uuid4()
    early = None
    if job.data is not None and engine_for(job.kind).runs_here(ctx):
        # Its engine works while its input is stored and its credits held (each waits on the database).
        job = await job_submission.with_clean_input(ctx, job)
        assert job.clean is not None
        work = JobWork(job_id, user_id, None, job.options, job.clean.data)
        early = runner.start_early(ctx, job.kind, work)
    try:
        async with ctx.database.session_scope() as session:
            submitted = await job_submission.submit_request(
                session, ctx, user_id, job, claimed=True, job_id=job_id
            )
            if on_submitted is not None:
                await on_submitted(session, submitted.job)
            claim = jobs.Claimed.of(submitted.job, submitted.source)
    except BaseException:
        if early is not None:
            runner.discard(early)
        raise
    try:
        result = await runner.execute(ctx, claim, early)
    except BaseException:
        # The client went away (or the runner broke) mid-job: end it now and free its credits, instead
        # of leaving it to the recovery (which fails a waited job it finds, never runs it again).
        await asyncio.shield(runner.cancel(ctx, claim.work.job_id))
        raise
    if isinstance(result, Job):
        raise jobs.job_failure(result)
    return result


class JobWaitTimedOut(ServiceUnavailable):
    code = "job_timeout"
    default_detail = "No worker finished the job in time, so nothing was charged; retry shortly."

    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(headers={"Retry-After": "30"}, extra={"job_id": str(job_id), "credits_charged": 0})


async def _run_on_queue(
    ctx: Container,
    dispatcher: QueueDispatcher,
    user_id: uuid.UUID,
    job: job_submission.JobRequest,
    on_submitted: Callable[[AsyncSession, Job], Awaitable[None]] | None,
) -> jobs.FinishedJob:
    """Submit (PENDING, marked WAITED), send it once committed, and wait for a worker to end it, up to
    JOB_WAIT_TIMEOUT_SECONDS. The request is still open after the commit, so a send the broker refuses
    is compensated here: the job is failed, its credits released, and the client answered 503. Whatever
    ends the wait early (timeout, the client gone) cancels the job the same way, uncharged; a worker
    that finishes it later finds it failed and keeps nothing."""
    async with ctx.database.session_scope() as session:
        await dispatcher.ensure_open()
        submitted = await job_submission.submit_request(session, ctx, user_id, job, waited=True)
        if on_submitted is not None:
            await on_submitted(session, submitted.job)
    job_id = submitted.job.id
    try:
        await dispatcher.send(job_id)
    except BaseException:
        message = "The job could not be queued, so nothing was charged."
        await asyncio.shield(jobs.fail(ctx, job_id, QUEUE_UNAVAILABLE, message, 0, None))
        raise
    try:
        return await _finished(ctx, user_id, job_id, jobs.wait_until(submitted.job))
    except BaseException as exc:
        ended = await asyncio.shield(runner.cancel(ctx, job_id))
        finished_first = ended is not None and ended.status == JobStatus.completed.value
        if isinstance(exc, JobWaitTimedOut) and finished_first:  # in the nick of time
            return await jobs.result_of(ctx, user_id, job_id)
        raise


async def _finished(
    ctx: Container, user_id: uuid.UUID, job_id: uuid.UUID, wait_until: datetime | None
) -> jobs.FinishedJob:
    """The job once a worker has ended it, read from its row (polled, less often as time passes): a
    failed job raises its `job_failure`, one still running at the deadline JobWaitTimedOut. The deadline
    is the job's own `wait_until`, the instant past which no worker charges it. A database that stops
    answering does not end the wait before it: a 503 then could not cancel the job, which the worker
    would finish and charge once the database is back."""
    timeout = ctx.settings.job_wait_timeout_seconds
    if wait_until is not None:
        timeout = (wait_until - utcnow()).total_seconds()
    deadline = time.monotonic() + timeout
    interval = POLL_FIRST_SECONDS
    while True:
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, POLL_MAX_SECONDS)
        try:
            status = await jobs.status_of(ctx, job_id)
            if status in TERMINAL_STATUSES or status is None:
                return await jobs.result_of(ctx, user_id, job_id)
        except Exception as exc:
            if not transient_database_error(exc) or time.monotonic() >= deadline:
                raise
            log.warning("job.wait_database_error", job_id=str(job_id), error=type(exc).__name__)
            continue
        if time.monotonic() >= deadline:
            raise JobWaitTimedOut(job_id)

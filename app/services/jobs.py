"""AI jobs: submitted with a credit reservation in one transaction (app/services/job_submission.py),
then run after commit by the runner (app/tasks/runner.py) with the job's engine (app/services/engines);
captured when they complete and released when they fail, each end written in a unit of work of its own.
What a kind costs, which provider runs it and how is its engine's business; this module is the same
for every kind."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.db.retry import retry_transient
from app.db.session import SQLITE_READ_ONLY
from app.errors import AppError, Conflict, DatabaseUnavailable, NotFound, ServiceUnavailable
from app.integrations.storage import ObjectNotFound, StorageError
from app.models import TERMINAL_STATUSES, Job, JobKind, JobStatus
from app.repositories.images import JobRepository
from app.services import credits, new_movements, usage
from app.services import images as images_service
from app.services.engines import JobOutput, JobWork, engine_for

log = structlog.get_logger("app.jobs")
# A job's completion or failure that hits a transient database error (SQLite busy, a deadlock, a dropped
# connection) is written again, this many times in all, after 50 ms, 100 ms, 200 ms...
WRITE_RETRIES: dict[str, Any] = {"attempts": 4, "base_delay_seconds": 0.05}
# In a job's options: a client waits for it on its request. Such a job is never re-run by the recovery:
# whoever waited got an answer (or lost the connection) already, and a result nobody receives must not
# be charged.
WAITED = "waited"
# In a queued waited job's options: when its client stops waiting (JOB_WAIT_TIMEOUT_SECONDS after the
# submit). Past it a worker neither runs nor charges the job: whoever waited has been answered already,
# possibly with an outage's 503 that could not cancel the job.
WAIT_UNTIL = "wait_until"
WAIT_EXPIRED = "Its request had stopped waiting, so it was not run to the end and nothing was charged."
# The failure code of a waited job whose request went away (or whose end could not be recorded).
CANCELLED = "cancelled"
# Failure codes that may pass if the same job is tried again later.
RETRYABLE_CODES = frozenset(
    {
        "provider_rate_limited",
        "provider_timeout",
        "provider_unreachable",
        "provider_error",
        "storage_unavailable",
        "database_unavailable",
        "job_queue_unavailable",
    }
)


class JobFailed(AppError):
    """A job run in the request failed; nothing was charged. 502: the provider refused it."""

    status_code = 502
    code = "job_failed"

    def __init__(self, job: Job, headers: dict[str, str] | None = None) -> None:
        self.reason = job.error_code or "job_failed"
        super().__init__(
            job.error_message or "The job failed.",
            extra={"job_id": str(job.id), "reason": self.reason, "credits_charged": 0},
            headers=headers,
            # The failed job and its released reservation were committed by the job's own units of work;
            # nothing of the request's may undo them.
            keep_changes=True,
        )


class JobInputRejected(JobFailed):
    status_code = 422


class JobProviderUnavailable(JobFailed):
    status_code = 503


def job_failure(job: Job) -> JobFailed:
    code = job.error_code or "job_failed"
    if code in ("invalid_image", "image_too_complex"):
        return JobInputRejected(job)
    if code in RETRYABLE_CODES:
        return JobProviderUnavailable(job, headers={"Retry-After": "30"})
    return JobFailed(job)


class JobStillRunning(Conflict):
    code = "job_running"
    default_detail = "The job this request started is still running; retry shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"})


class CompletionNotRecorded(DatabaseUnavailable):
    """The job ran, but the database refused to record its completion, every time it was asked: the job
    ended failed with its credits released (or is left for the recovery to end so), never charged."""

    default_detail = "The result could not be recorded, so nothing was charged; retry shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"}, extra={"credits_charged": 0})


# --- results ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishedJob:
    """What a waiting client gets: the completed job, its outputs' bytes (no second trip to storage)
    and the balance right after the capture."""

    job: Job
    outputs: list[JobOutput]
    balance: int


async def result_of(ctx: Container, user_id: uuid.UUID, job_id: uuid.UUID) -> FinishedJob:
    """A job's result once more (a retried request): its outputs read back from storage. A failed job
    raises its `job_failure`, as the first answer did."""
    async with ctx.database.session_scope() as session:
        job = await JobRepository(session).get_for_user(job_id, user_id)
        balance = await credits.balance_of(session, user_id)
    if job is None:
        raise NotFound("The image this request made has since been deleted.")
    if job.status == JobStatus.failed.value:
        raise job_failure(job)
    if job.status != JobStatus.completed.value:
        raise JobStillRunning()
    try:
        outputs = [
            JobOutput.image(
                await ctx.storage.get(output["key"]), output["content_type"], output.get("view", "main")
            )
            for output in job.outputs
        ]
    except ObjectNotFound as exc:
        raise NotFound("The image this request made has since been deleted.") from exc
    except StorageError as exc:
        raise ServiceUnavailable("The stored result cannot be read right now; retry shortly.") from exc
    return FinishedJob(job, outputs, balance)


# --- a run's lease and its end ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A job this worker holds the lease of."""

    kind: JobKind
    work: JobWork
    waited: bool = False  # a client waits for it on its request (see WAITED)
    wait_until: datetime | None = None  # when that client stops waiting, if a queue worker runs it

    @classmethod
    def of(cls, job: Job, source: bytes | None = None) -> Claimed:
        work = JobWork(job.id, job.user_id, job.input_key, dict(job.options), source)
        return cls(JobKind(job.kind), work, waited=bool(job.options.get(WAITED)), wait_until=wait_until(job))

    @property
    def abandoned(self) -> bool:
        """Its client stopped waiting: running it now would serve nobody."""
        return self.wait_until is not None and utcnow() > self.wait_until


def wait_until(job: Job) -> datetime | None:
    value = job.options.get(WAIT_UNTIL)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


async def claim(ctx: Container, job_id: uuid.UUID) -> Claimed | None:
    """Take the job's lease (PENDING, or PROCESSING past its lease): None if another worker holds it or
    it has ended."""
    now = utcnow()
    async with ctx.database.session_scope() as session:
        repository = JobRepository(session)
        lease_until = now + timedelta(seconds=ctx.settings.job_lease_seconds)
        if not await repository.claim(job_id, now, lease_until):
            return None
        job = await repository.get(job_id)
        assert job is not None
        return Claimed.of(job)


async def status_of(ctx: Container, job_id: uuid.UUID) -> str | None:
    """The job's status now (None: gone), read without taking SQLite's write lock (it is polled)."""
    async with ctx.database.session_scope() as session:
        await session.connection(execution_options={SQLITE_READ_ONLY: True})
        job = await JobRepository(session).get(job_id)
        return None if job is None else job.status


async def lease_left(ctx: Container, job_id: uuid.UUID) -> float | None:
    """Seconds left on the lease a worker holds on the job (PROCESSING); None when the job has ended,
    is gone, or is free to claim."""
    async with ctx.database.session_scope() as session:
        job = await JobRepository(session).get(job_id)
    if job is None or job.status != JobStatus.processing.value or job.lease_until is None:
        return None
    return max(0.0, (job.lease_until - utcnow()).total_seconds())


async def complete(
    ctx: Container,
    job_id: uuid.UUID,
    outputs: list[JobOutput],
    stored: list[dict[str, Any]],
    attempts: int,
    started: float,
) -> FinishedJob | Job:
    """Record the result and capture the credits, retried on transient database errors. A job that ended
    meanwhile (cancelled, recovered as abandoned, deleted with its owner's account) is charged nothing
    and keeps none of what this run stored: the failed row is returned instead."""

    async def write() -> tuple[FinishedJob | Job | None, bool]:
        async with ctx.database.session_scope() as session:
            job = await JobRepository(session).get(job_id, for_update=True)
            if job is not None and job.status == JobStatus.completed.value:
                # Recorded already: by an earlier attempt whose commit was answered with an error, or by
                # another worker (same output keys). Either way it was charged once.
                return FinishedJob(job, outputs, await credits.balance_of(session, job.user_id)), False
            if job is None or job.status != JobStatus.processing.value:
                return job, False
            deadline = wait_until(job)
            if deadline is not None and utcnow() > deadline:
                # Finished after its client stopped waiting (and was answered without it): not charged.
                log.info("job.wait_expired", job_id=str(job_id))
                await _end_failed(session, job, CANCELLED, WAIT_EXPIRED, attempts, started)
                return job, False
            job.status = JobStatus.completed.value
            job.outputs = stored
            job.attempts = max(job.attempts, attempts)
            job.finished_at = utcnow()
            job.lease_until = None
            job.time_taken_ms = int((time.perf_counter() - started) * 1000)
            charged = engine_for(job.kind).captured(job.options, job.credits_reserved, outputs)
            if job.reservation_key:
                balance = await new_movements.capture_held(
                    session,
                    job.user_id,
                    job.credits_reserved,
                    job.reservation_key,
                    ledger_reference(job),
                    charged or None,
                )
            else:
                balance = await credits.balance_of(session, job.user_id)
            # A completed job's credits are what it cost (the image's `credits`, the usage report's
            # charge): less than reserved when it delivered fewer outputs than were paid for.
            job.credits_reserved = charged
            await _record_usage(session, job, success=True, charged=charged)
            return FinishedJob(job, outputs, balance), True

    result, recorded = await retry_transient(write, what="job.complete", **WRITE_RETRIES)
    if isinstance(result, FinishedJob):
        if recorded:
            job = result.job
            ctx.metrics.observe_job(job.kind, job.provider, job.status, None, time.perf_counter() - started)
            log.info("job.completed", job_id=str(job_id))
        return result
    log.warning("job.finished_elsewhere", job_id=str(job_id))
    if result is None or result.status == JobStatus.failed.value:
        # Failed meanwhile (its credits went back) or gone with its owner's account: nothing refers to
        # the files this run stored.
        await asyncio.shield(images_service.delete_objects(ctx, [output["key"] for output in stored]))
    return result if result is not None and result.status == JobStatus.failed.value else vanished(job_id)


async def fail(
    ctx: Container, job_id: uuid.UUID, code: str, message: str, attempts: int, started: float | None
) -> Job:
    """Fail the job and release its credits, retried on transient database errors; returns the row (as
    it ended, if it had ended already)."""

    async def write() -> tuple[Job, bool]:
        async with ctx.database.session_scope() as session:
            job = await JobRepository(session).get(job_id, for_update=True)
            if job is None:
                return vanished(job_id), False
            if job.status in TERMINAL_STATUSES:
                return job, False
            await _end_failed(session, job, code, message, attempts, started)
            return job, True

    job, recorded = await retry_transient(write, what="job.fail", **WRITE_RETRIES)
    if recorded:
        ctx.metrics.observe_job(job.kind, job.provider, job.status, code, None)
        log.info("job.failed", job_id=str(job_id), code=code)
    return job


async def _end_failed(
    session: AsyncSession, job: Job, code: str, message: str, attempts: int, started: float | None
) -> None:
    """Mark the (locked, unended) job failed and release its credits, in the caller's transaction."""
    job.status = JobStatus.failed.value
    job.error_code = code
    job.error_message = message[:2000]
    job.attempts = max(job.attempts, attempts)
    job.finished_at = utcnow()
    job.lease_until = None
    if started is not None:
        job.time_taken_ms = int((time.perf_counter() - started) * 1000)
    if job.reservation_key:
        await new_movements.release_held(
            session, job.user_id, job.credits_reserved, job.reservation_key, ledger_reference(job)
        )
    await _record_usage(session, job, success=False)


async def _record_usage(session: AsyncSession, job: Job, *, success: bool, charged: int = 0) -> None:
    """The job's usage record (`charged`: the millicredits captured), in the transaction that captured
    (or released) its credits."""
    await usage.record(
        session,
        user_id=job.user_id,
        action=engine_for(job.kind).usage_action(job.options),
        credits=charged if success else 0,
        object_id=job.id,
        success=success,
    )


async def balance_after(ctx: Container, job: Job, outputs: list[JobOutput]) -> FinishedJob:
    """A completed job as its waiting client gets it, with the balance read now."""
    async with ctx.database.session_scope() as session:
        balance = await credits.balance_of(session, job.user_id)
    return FinishedJob(job, outputs, balance)


def ledger_reference(job: Job) -> str:
    """What the job's ledger rows refer to."""
    return f"job:{job.id}"


def vanished(job_id: uuid.UUID) -> Job:
    """A job deleted (its owner erased) or completed by another worker while this one ran: reported
    as failed to whoever waits, charging nothing more."""
    return Job(
        id=job_id,
        status=JobStatus.failed.value,
        error_code="job_lost",
        error_message="The job ended elsewhere while it was running.",
    )

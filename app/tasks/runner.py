"""The default job runner: a job runs in this process, after the commit that submitted it (a
BackgroundTask), on its client's request (app/tasks/waited.py) or when the recovery finds it abandoned.
Every kind runs the same way; what differs is its engine's `execute`."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import BackgroundTasks

from app.container import Container
from app.db.retry import transient_database_error
from app.integrations.images.base import EngineError
from app.integrations.storage import StorageError
from app.models import Job, JobKind, JobStatus
from app.services import images as images_service
from app.services import jobs
from app.services.engines import JobOutput, JobWork, engine_for

log = structlog.get_logger("app.jobs")
_running: set[asyncio.Task[Any]] = set()
# A lease that ran out is claimable at once; this margin keeps a redelivery from arriving a hair early.
LEASE_MARGIN_SECONDS = 1.0


def run_after_commit(background: BackgroundTasks, ctx: Container, job_id: uuid.UUID) -> None:
    """Run the job once the request's transaction has committed (its session dependency has function
    scope, so the commit comes before any BackgroundTask)."""
    background.add_task(run, ctx, job_id)


def run_in_background(ctx: Container, job_ids: list[uuid.UUID]) -> None:
    """Run these jobs as tasks of this process's event loop (jobs the recovery found)."""
    for job_id in job_ids:
        task = asyncio.create_task(run(ctx, job_id), name=f"job-{job_id}")
        _running.add(task)  # keep a reference until it finishes
        task.add_done_callback(_running.discard)


async def run(ctx: Container, job_id: uuid.UUID) -> None:
    """Run one job to a terminal state. Safe to call twice: only the caller that claims it runs it."""
    claim = await jobs.claim(ctx, job_id)
    if claim is None:
        return
    try:
        await execute(ctx, claim)
    except jobs.CompletionNotRecorded:
        return  # logged; the job ended failed (or is the recovery's), nobody waits for an answer here


async def run_delivered(ctx: Container, job_id: uuid.UUID) -> None:
    """Run a job whose id a queue worker received. Its lease decides: a job that ended is left alone (a
    duplicate message, or the redelivery of a job that completed before its worker died: charged once),
    a free one is run, and one whose lease another worker still holds is sent again for when that lease
    runs out, since the holder may be a dead worker whose message this is."""
    claim = await jobs.claim(ctx, job_id)
    if claim is None:
        held = await jobs.lease_left(ctx, job_id)
        if held is not None and ctx.job_queue is not None:
            log.info("job.held_elsewhere", job_id=str(job_id), retry_in=round(held, 1))
            await asyncio.to_thread(ctx.job_queue.send, str(job_id), held + LEASE_MARGIN_SECONDS)
        return
    if claim.abandoned:  # a backlog outlasted its client's wait: nobody would get the result
        await jobs.fail(ctx, job_id, jobs.CANCELLED, jobs.WAIT_EXPIRED, 0, None)
        return
    try:
        await execute(ctx, claim)
    except jobs.CompletionNotRecorded:
        return  # logged; the job ended failed (or is the recovery's)


@dataclass(frozen=True)
class EarlyRun:
    """A waited job's first attempt, started on its validated input before the job was committed."""

    outputs: asyncio.Task[list[JobOutput]]
    started: float


def start_early(ctx: Container, kind: JobKind, work: JobWork) -> EarlyRun:
    """Start the engine's first attempt at `work` now (an engine that `runs_here`): the job's bookkeeping
    (storing its input, holding its credits) is then done while its engine works, not before."""
    engine = engine_for(kind)
    started = time.perf_counter()
    task = asyncio.create_task(engine.execute(ctx, work), name=f"job-{work.job_id}-early")
    _running.add(task)  # keep a reference until it finishes, even once discarded
    task.add_done_callback(_running.discard)
    return EarlyRun(task, started)


def discard(early: EarlyRun) -> None:
    """The job was refused (or its request went away) after its engine started: its result is of no use.
    Nothing was stored or charged for it; a run already in a worker process ends there unseen."""
    task = early.outputs
    if not task.cancel() and not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it as lost


async def execute(
    ctx: Container, claim: jobs.Claimed, early: EarlyRun | None = None
) -> jobs.FinishedJob | Job:
    """Execute a job this worker holds the lease of, retrying what may pass; returns the finished job
    or, if it failed, the failed row. `early`: its first attempt, already started."""
    settings = ctx.settings
    job_id = claim.work.job_id
    engine = engine_for(claim.kind)
    started = early.started if early is not None else time.perf_counter()
    log.info("job.started", job_id=str(job_id), kind=claim.kind.value)
    attempt = 0
    while True:
        attempt += 1
        try:
            if early is not None and attempt == 1:
                outputs = await early.outputs
            else:
                outputs = await engine.execute(ctx, claim.work)
            keys = await _store_outputs(ctx, claim.work.user_id, job_id, outputs)
            break
        except EngineError as exc:
            if exc.retryable and attempt < settings.job_max_attempts:
                delay = settings.job_retry_base_seconds * 2 ** (attempt - 1)
                log.warning("job.retrying", job_id=str(job_id), code=exc.code, attempt=attempt, delay=delay)
                await asyncio.sleep(delay)
                continue
            return await jobs.fail(ctx, job_id, exc.code, str(exc), attempt, started)
        except Exception as exc:
            log.exception("job.crashed", job_id=str(job_id))
            return await jobs.fail(
                ctx, job_id, "internal_error", f"{type(exc).__name__}: the job failed.", attempt, started
            )
    return await _record(ctx, claim, outputs, keys, attempt, started)


async def _record(
    ctx: Container,
    claim: jobs.Claimed,
    outputs: list[JobOutput],
    keys: list[dict[str, Any]],
    attempt: int,
    started: float,
) -> jobs.FinishedJob | Job:
    """Record the completion; if the database will not have it, end the job released instead."""
    job_id = claim.work.job_id
    try:
        return await jobs.complete(ctx, job_id, outputs, keys, attempt, started)
    except Exception as exc:
        log.error("job.completion_not_recorded", job_id=str(job_id), error=type(exc).__name__)
        code = jobs.CANCELLED if claim.waited else "database_unavailable"
        message = "The result could not be recorded, so nothing was charged."
        finished = await _end_unrecorded(ctx, job_id, outputs, keys, code, message, attempt, started)
        if finished is not None:
            return finished
        if transient_database_error(exc):
            raise jobs.CompletionNotRecorded() from exc
        raise  # a bug, not the database: a 500, with the job released all the same
    except BaseException:
        # Cancelled while recording the completion (the client went away, the server stops).
        cancelled = "The request was cancelled."
        await asyncio.shield(
            _end_unrecorded(ctx, job_id, outputs, keys, jobs.CANCELLED, cancelled, attempt, None)
        )
        raise


async def _store_outputs(
    ctx: Container, user_id: uuid.UUID, job_id: uuid.UUID, outputs: list[JobOutput]
) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = []
    try:
        for output in outputs:
            key = images_service.output_key(user_id, job_id, output.view, output.extension)
            await ctx.storage.put(key, output.data, output.content_type)
            size = len(output.data)
            keys.append({"key": key, "content_type": output.content_type, "view": output.view, "size": size})
    except BaseException as exc:
        # Whatever part was stored belongs to no job: it must not stay behind.
        await asyncio.shield(images_service.delete_objects(ctx, [stored["key"] for stored in keys]))
        if isinstance(exc, StorageError):
            raise EngineError(
                "storage_unavailable", "The result could not be stored.", retryable=True
            ) from exc
        raise
    return keys


async def _end_unrecorded(
    ctx: Container,
    job_id: uuid.UUID,
    outputs: list[JobOutput],
    stored: list[dict[str, Any]],
    code: str,
    message: str,
    attempts: int,
    started: float | None,
) -> jobs.FinishedJob | None:
    """The completion could not be recorded: fail the job (releasing its credits) and delete what it
    stored. Returns the finished job if the completion had been recorded after all (a commit answered
    with an error). If even the failure cannot be written, the job is left to the recovery (which fails
    a waited job, never re-runs it) and its files are kept, since its state is unknown."""
    try:
        ended = await jobs.fail(ctx, job_id, code, message, attempts, started)
        if ended.status == JobStatus.completed.value:
            return await jobs.balance_after(ctx, ended, outputs)
    except Exception:
        log.exception("job.failure_not_recorded", job_id=str(job_id))
        return None
    await images_service.delete_objects(ctx, [output["key"] for output in stored])
    return None


async def cancel(ctx: Container, job_id: uuid.UUID) -> Job | None:
    """End a waited job whose request is going away; returns the row as it ended (completed if it
    finished first). If the database refuses, the recovery will end it: None."""
    try:
        return await jobs.fail(ctx, job_id, jobs.CANCELLED, "The request was cancelled.", 1, None)
    except Exception:
        log.exception("job.cancel_not_recorded", job_id=str(job_id))
        return None

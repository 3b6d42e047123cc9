"""AI jobs: submitted with a credit reservation in one transaction, run after commit by whoever picks
them up (a BackgroundTask, a waiting request, the startup recovery), captured on success and released
on failure. A job interrupted by a crash is found by its expired lease and re-run or failed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.db.retry import retry_transient, transient_database_error
from app.errors import AppError, Conflict, DatabaseUnavailable, NotFound, ServiceUnavailable
from app.integrations.images.base import IMAGE_EXTENSIONS, EngineError, VectorizeOptions
from app.integrations.storage import ObjectNotFound, StorageError
from app.models import TERMINAL_STATUSES, Job, JobKind, JobStatus, Upload, UploadOrigin, User
from app.repositories.images import JobRepository
from app.services import credits, generation
from app.services import images as images_service
from app.services import uploads as uploads_service
from app.services import users as users_service

log = structlog.get_logger("app.jobs")
CLIPDROP_MAX_PIXELS = 25_000_000
# A job's completion or failure that hits a transient database error (SQLite busy, a deadlock, a dropped
# connection) is written again, this many times in all, after 50 ms, 100 ms, 200 ms...
_WRITE_RETRIES: dict[str, Any] = {"attempts": 4, "base_delay_seconds": 0.05}
# In a job's options: a client waits for it on its request (`run_now`). Such a job is never re-run by the
# recovery: whoever waited got an answer (or lost the connection) already, and a result nobody receives
# must not be charged.
WAITED = "waited"


@dataclass(frozen=True)
class JobOutput:
    data: bytes
    content_type: str
    extension: str
    view: str = "main"


CANCELLED = "cancelled"


class JobFailed(AppError):
    """A job run in the request failed; nothing was charged. 502: the provider refused it."""

    status_code = 502
    code = "job_failed"

    def __init__(self, job: Job, headers: dict[str, str] | None = None) -> None:
        self.reason = job.error_code or "job_failed"
        super().__init__(
            job.error_message or "The job failed.",
            extra={"job_id": str(job.id), "reason": job.error_code or "job_failed", "credits_charged": 0},
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
    if _retryable_code(code):
        return JobProviderUnavailable(job, headers={"Retry-After": "30"})
    return JobFailed(job)


def _retryable_code(code: str) -> bool:
    return code in {
        "provider_rate_limited",
        "provider_timeout",
        "provider_unreachable",
        "provider_error",
        "storage_unavailable",
        "database_unavailable",
    }


def cost_of(ctx: Container, kind: JobKind, options: dict[str, Any]) -> int:
    settings = ctx.settings
    if kind is JobKind.remove_background:
        return credits.to_millicredits(settings.remove_background_cost_credits)
    if kind is JobKind.vectorize:
        preview = options.get("mode") == "preview"
        price = settings.vectorize_preview_cost_credits if preview else settings.vectorize_full_cost_credits
        return credits.to_millicredits(price)
    raise ValueError(f"no price for {kind}")


async def submit(
    session: AsyncSession,
    ctx: Container,
    user: User,
    kind: JobKind,
    upload: Upload,
    options: dict[str, Any],
    *,
    claimed: bool = False,
) -> Job:
    """Create the job and reserve its credits, in the caller's transaction (402 leaves nothing; 404 if the
    account was erased meanwhile: the user's row is locked first, as erasure does).
    `claimed`: the caller waits for it and runs it right after commit, so it is created PROCESSING under
    a lease (as `claim` would leave it) instead of PENDING, saving a transaction; if the runner dies,
    the recovery fails it (releasing its credits) instead of running it for nobody."""
    await users_service.lock_open(session, user.id)
    job_id = uuid.uuid4()
    cost = cost_of(ctx, kind, options)
    lease: dict[str, Any] = {}
    if claimed:
        options = {**options, WAITED: True}
        now = utcnow()
        lease = {
            "status": JobStatus.processing.value,
            "attempts": 1,
            "started_at": now,
            "lease_until": now + timedelta(seconds=ctx.settings.job_lease_seconds),
        }
    job = await JobRepository(session).add(
        Job(
            id=job_id,
            user_id=user.id,
            kind=kind.value,
            input_upload_id=upload.id,
            input_key=upload.storage_key,
            options=options,
            credits_reserved=cost,
            reservation_key=f"job:{job_id}:reserve" if cost else None,
            provider=_provider_name(ctx, kind),
            **lease,
        )
    )
    if cost:
        assert job.reservation_key is not None
        await credits.reserve(session, user.id, cost, job.reservation_key, reference=f"job:{job_id}")
    return job


def _provider_name(ctx: Container, kind: JobKind) -> str:
    if kind is JobKind.remove_background:
        return ctx.background_remover.name
    if kind is JobKind.vectorize:
        return ctx.vectorizer.name
    return "replicate"


@dataclass(frozen=True)
class Submitted:
    job: Job
    # The input's stored bytes when they came with the request: a job run at once need not fetch them.
    source: bytes | None


async def submit_from_input(
    session: AsyncSession,
    ctx: Container,
    user: User,
    kind: JobKind,
    *,
    data: bytes | None,
    upload_id: uuid.UUID | None,
    options: dict[str, Any],
    allowed: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP"}),
    claimed: bool = False,
) -> Submitted:
    source = None
    if data is not None:
        stored = await uploads_service.store(
            session, ctx, user, data, allowed=allowed, origin=UploadOrigin.job_input
        )
        upload, source = stored.upload, stored.data
    elif upload_id is not None:
        upload = await uploads_service.get_owned(session, user, upload_id)
        if uploads_service.format_of(upload) not in allowed:
            raise uploads_service.NotAnImage(f"This endpoint takes {', '.join(sorted(allowed))} images.")
    else:
        raise uploads_service.EmptyUpload("Send a file or an upload_id.")
    try:
        job = await submit(session, ctx, user, kind, upload, options, claimed=claimed)
    except BaseException:
        if data is not None:  # refused (402): the object stored a moment ago must not outlive its row
            await asyncio.shield(images_service.delete_objects(ctx, [upload.storage_key]))
        raise
    return Submitted(job, source)


@dataclass(frozen=True)
class FinishedJob:
    """What a waiting client gets: the completed job, its outputs' bytes (no second trip to storage)
    and the balance right after the capture."""

    job: Job
    outputs: list[JobOutput]
    balance: int


@dataclass(frozen=True)
class JobRequest:
    """A job a client waits for: its kind, its input (bytes sent with the request, or an upload), options."""

    kind: JobKind
    data: bytes | None
    upload_id: uuid.UUID | None
    options: dict[str, Any]
    allowed: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP"})


OnSubmitted = Callable[[AsyncSession, Job], Awaitable[None]]


async def run_now(
    ctx: Container, user_id: uuid.UUID, request: JobRequest, on_submitted: OnSubmitted | None = None
) -> FinishedJob:
    """Submit (committed at once, already claimed), run, and return the finished job: for clients that
    wait. A failed job raises its `job_failure`. `on_submitted` runs in the submitting transaction."""
    async with ctx.database.session_scope() as session:
        user = await users_service.require_user(session, user_id)
        submitted = await submit_from_input(
            session,
            ctx,
            user,
            request.kind,
            data=request.data,
            upload_id=request.upload_id,
            options=request.options,
            allowed=request.allowed,
            claimed=True,
        )
        job = submitted.job
        if on_submitted is not None:
            await on_submitted(session, job)
        claim = _Claim(
            job.id, request.kind, job.input_key, dict(job.options), user.id, submitted.source, waited=True
        )
    try:
        result = await _run_claimed(ctx, claim)
    except BaseException:
        # The client went away (or the runner broke) mid-job: end it now and free its credits, instead
        # of leaving it to the recovery (which fails a waited job it finds, never runs it again).
        await asyncio.shield(_cancel(ctx, claim.job_id))
        raise
    if isinstance(result, Job):
        raise job_failure(result)
    return result


class JobStillRunning(Conflict):
    code = "job_running"
    default_detail = "The job this request started is still running; retry shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"})


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
            JobOutput(
                await ctx.storage.get(output["key"]),
                output["content_type"],
                IMAGE_EXTENSIONS.get(output["content_type"], "bin"),
                output.get("view", "main"),
            )
            for output in job.outputs
        ]
    except ObjectNotFound as exc:
        raise NotFound("The image this request made has since been deleted.") from exc
    except StorageError as exc:
        raise ServiceUnavailable("The stored result cannot be read right now; retry shortly.") from exc
    return FinishedJob(job, outputs, balance)


@dataclass(frozen=True)
class _Claim:
    job_id: uuid.UUID
    kind: JobKind
    input_key: str | None
    options: dict[str, Any]
    user_id: uuid.UUID
    source: bytes | None = None
    waited: bool = False  # a client waits for it on its request (see WAITED)


class CompletionNotRecorded(DatabaseUnavailable):
    """The job ran, but the database refused to record its completion, every time it was asked: the job
    ended failed with its credits released (or is left for the recovery to end so), never charged."""

    default_detail = "The result could not be recorded, so nothing was charged; retry shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"}, extra={"credits_charged": 0})


async def run(ctx: Container, job_id: uuid.UUID) -> None:
    """Run one job to a terminal state. Safe to call twice: only the caller that claims it runs it."""
    now = utcnow()
    async with ctx.database.session_scope() as session:
        repository = JobRepository(session)
        lease_until = now + timedelta(seconds=ctx.settings.job_lease_seconds)
        if not await repository.claim(job_id, now, lease_until):
            return
        job = await repository.get(job_id)
        assert job is not None
        claim = _Claim(
            job_id,
            JobKind(job.kind),
            job.input_key,
            dict(job.options),
            job.user_id,
            waited=bool(job.options.get(WAITED)),
        )
    try:
        await _run_claimed(ctx, claim)
    except CompletionNotRecorded:
        return  # logged; the job ended failed (or is the recovery's), nobody waits for an answer here


async def _run_claimed(ctx: Container, claim: _Claim) -> FinishedJob | Job:
    """Execute a job this worker holds the lease of, retrying what may pass; returns the finished job
    or, if it failed, the failed row."""
    settings = ctx.settings
    job_id = claim.job_id
    started = time.perf_counter()
    log.info("job.started", job_id=str(job_id), kind=claim.kind.value)
    attempt = 0
    while True:
        attempt += 1
        try:
            outputs = await _execute(ctx, claim)
            keys = await _store_outputs(ctx, claim.user_id, job_id, outputs)
            break
        except EngineError as exc:
            if exc.retryable and attempt < settings.job_max_attempts:
                delay = settings.job_retry_base_seconds * 2 ** (attempt - 1)
                log.warning("job.retrying", job_id=str(job_id), code=exc.code, attempt=attempt, delay=delay)
                await asyncio.sleep(delay)
                continue
            return await _fail(ctx, job_id, exc.code, str(exc), attempt, started)
        except Exception as exc:
            log.exception("job.crashed", job_id=str(job_id))
            return await _fail(
                ctx, job_id, "internal_error", f"{type(exc).__name__}: the job failed.", attempt, started
            )
    try:
        return await _complete(ctx, job_id, outputs, keys, attempt, started)
    except Exception as exc:
        log.error("job.completion_not_recorded", job_id=str(job_id), error=type(exc).__name__)
        code = CANCELLED if claim.waited else "database_unavailable"
        message = "The result could not be recorded, so nothing was charged."
        finished = await _end_unrecorded(ctx, job_id, outputs, keys, code, message, attempt, started)
        if finished is not None:
            return finished
        if transient_database_error(exc):
            raise CompletionNotRecorded() from exc
        raise  # a bug, not the database: a 500, with the job released all the same
    except BaseException:
        # Cancelled while recording the completion (the client went away, the server stops).
        cancelled = "The request was cancelled."
        await asyncio.shield(_end_unrecorded(ctx, job_id, outputs, keys, CANCELLED, cancelled, attempt, None))
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


async def _execute(ctx: Container, claim: _Claim) -> list[JobOutput]:
    kind, options = claim.kind, claim.options
    if kind is JobKind.generate:
        views = await generation.generate(ctx, claim.job_id, claim.input_key, options)
        return [
            JobOutput(data, content_type, IMAGE_EXTENSIONS.get(content_type, "bin"), view)
            for data, content_type, view in views
        ]
    assert claim.input_key is not None
    source = claim.source if claim.source is not None else await _read_input(ctx, claim.input_key)
    if kind is JobKind.remove_background and ctx.background_remover.name == "clipdrop":
        # ClipDrop refuses inputs over 25 MP; an operator may accept larger uploads than that.
        source = await asyncio.to_thread(uploads_service.fit_pixels, source, CLIPDROP_MAX_PIXELS)
    if kind is JobKind.remove_background:
        return [JobOutput(await ctx.background_remover.remove_background(source), "image/png", "png")]
    if kind is JobKind.vectorize:
        vector_options = VectorizeOptions(**options.get("engine", {}))
        svg = await ctx.vectorizer.vectorize(source, vector_options)
        return [JobOutput(svg.encode(), "image/svg+xml", "svg")]
    raise EngineError("unsupported_job", f"No runner for {kind.value} jobs.", retryable=False)


async def _read_input(ctx: Container, key: str) -> bytes:
    try:
        return await ctx.storage.get(key)
    except ObjectNotFound as exc:
        raise EngineError("input_missing", "The input image was deleted.", retryable=False) from exc
    except StorageError as exc:
        raise EngineError("storage_unavailable", "The input could not be read.", retryable=True) from exc


async def _complete(
    ctx: Container,
    job_id: uuid.UUID,
    outputs: list[JobOutput],
    stored: list[dict[str, Any]],
    attempts: int,
    started: float,
) -> FinishedJob | Job:
    """Record the result and capture the credits, retried on transient database errors. A job that ended
    meanwhile (cancelled, recovered as abandoned, deleted with its owner's account) is charged nothing
    and keeps none of what this run stored."""

    async def write() -> tuple[FinishedJob | Job | None, bool]:
        async with ctx.database.session_scope() as session:
            job = await JobRepository(session).get(job_id, for_update=True)
            if job is not None and job.status == JobStatus.completed.value:
                # Recorded already: by an earlier attempt whose commit was answered with an error, or by
                # another worker (same output keys). Either way it was charged once.
                return FinishedJob(job, outputs, await credits.balance_of(session, job.user_id)), False
            if job is None or job.status != JobStatus.processing.value:
                return job, False
            job.status = JobStatus.completed.value
            job.outputs = stored
            job.attempts = max(job.attempts, attempts)
            job.finished_at = utcnow()
            job.lease_until = None
            job.time_taken_ms = int((time.perf_counter() - started) * 1000)
            if job.reservation_key:
                await credits.capture(session, job.reservation_key)
            balance = await credits.balance_of(session, job.user_id)
            return FinishedJob(job, outputs, balance), True

    result, recorded = await retry_transient(write, what="job.complete", **_WRITE_RETRIES)
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
    return result if result is not None and result.status == JobStatus.failed.value else _vanished(job_id)


async def _end_unrecorded(
    ctx: Container,
    job_id: uuid.UUID,
    outputs: list[JobOutput],
    stored: list[dict[str, Any]],
    code: str,
    message: str,
    attempts: int,
    started: float | None,
) -> FinishedJob | None:
    """The completion could not be recorded: fail the job (releasing its credits) and delete what it
    stored. Returns the finished job if the completion had been recorded after all (a commit answered
    with an error). If even the failure cannot be written, the job is left to the recovery (which fails
    a waited job, never re-runs it) and its files are kept, since its state is unknown."""
    try:
        ended = await _fail(ctx, job_id, code, message, attempts, started)
        if ended.status == JobStatus.completed.value:
            async with ctx.database.session_scope() as session:
                balance = await credits.balance_of(session, ended.user_id)
            return FinishedJob(ended, outputs, balance)
    except Exception:
        log.exception("job.failure_not_recorded", job_id=str(job_id))
        return None
    await images_service.delete_objects(ctx, [output["key"] for output in stored])
    return None


async def _cancel(ctx: Container, job_id: uuid.UUID) -> None:
    """End a waited job whose request is going away; if the database refuses, the recovery will."""
    try:
        await _fail(ctx, job_id, CANCELLED, "The request was cancelled.", 1, None)
    except Exception:
        log.exception("job.cancel_not_recorded", job_id=str(job_id))


def _vanished(job_id: uuid.UUID) -> Job:
    """A job deleted (its owner erased) or completed by another worker while this one ran: reported
    as failed to whoever waits, charging nothing more."""
    return Job(
        id=job_id,
        status=JobStatus.failed.value,
        error_code="job_lost",
        error_message="The job ended elsewhere while it was running.",
    )


async def _fail(
    ctx: Container, job_id: uuid.UUID, code: str, message: str, attempts: int, started: float | None
) -> Job:
    """Fail the job and release its credits, retried on transient database errors; returns the row (as
    it ended, if it had ended already)."""

    async def write() -> tuple[Job, bool]:
        async with ctx.database.session_scope() as session:
            job = await JobRepository(session).get(job_id, for_update=True)
            if job is None:
                return _vanished(job_id), False
            if job.status in TERMINAL_STATUSES:
                return job, False
            job.status = JobStatus.failed.value
            job.error_code = code
            job.error_message = message[:2000]
            job.attempts = max(job.attempts, attempts)
            job.finished_at = utcnow()
            job.lease_until = None
            if started is not None:
                job.time_taken_ms = int((time.perf_counter() - started) * 1000)
            if job.reservation_key:
                await credits.release(session, job.reservation_key)
            return job, True

    job, recorded = await retry_transient(write, what="job.fail", **_WRITE_RETRIES)
    if recorded:
        ctx.metrics.observe_job(job.kind, job.provider, job.status, code, None)
        log.info("job.failed", job_id=str(job_id), code=code)
    return job


async def recover(ctx: Container, limit: int = 100) -> list[uuid.UUID]:
    """Jobs left behind by a crash: re-run those with attempts left, fail (and refund) the others.
    A job a client waited for is always failed: that client was answered (or lost its connection)
    already, and a result nobody receives must not be charged. Returns the ids to re-run; the caller
    schedules them."""
    now = utcnow()
    lease = timedelta(seconds=ctx.settings.job_lease_seconds)
    async with ctx.database.session_scope() as session:
        stale = await JobRepository(session).stale(now, pending_before=now - lease, limit=limit)
        plan = [(job.id, job.attempts, bool(job.options.get(WAITED))) for job in stale]
    rerun = []
    for job_id, attempts, waited in plan:
        if waited:
            message = "The request waiting for this job ended before it finished; nothing was charged."
            ended = await _fail(ctx, job_id, CANCELLED, message, attempts, None)
        elif attempts >= ctx.settings.job_max_attempts:
            ended = await _fail(
                ctx, job_id, "abandoned", "The job was interrupted too many times.", attempts, None
            )
        else:
            rerun.append(job_id)
            continue
        if ended.status == JobStatus.failed.value and ended.user_id is not None:
            # Its runner may have stored outputs before it stopped.
            await images_service.delete_objects(ctx, images_service.possible_output_keys(ended))
    if plan:
        log.info("jobs.recovered", rerun=len(rerun), failed=len(plan) - len(rerun))
    return rerun

"""A job's submission: its input stored (or the upload it names checked), the job created and its
credits held, in the caller's transaction. What happens after the commit is app/services/jobs.py's and
the runner's (app/tasks/runner.py)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.models import Job, JobKind, JobStatus, Upload, UploadOrigin
from app.repositories.images import JobRepository
from app.services import images as images_service
from app.services import new_movements
from app.services import uploads as uploads_service
from app.services import users as users_service
from app.services.engines import engine_for
from app.services.jobs import WAIT_UNTIL, WAITED, ledger_reference


async def submit(
    session: AsyncSession,
    ctx: Container,
    user_id: uuid.UUID,
    kind: JobKind,
    upload: Upload | None,
    options: dict[str, Any],
    *,
    claimed: bool = False,
    input_key: str | None = None,
    parent_job_id: uuid.UUID | None = None,
    waited: bool = False,
    job_id: uuid.UUID | None = None,
) -> Job:
    """Create the job and reserve its credits, in the caller's transaction (402 leaves nothing; 404 if the
    account was erased meanwhile: the user's row is locked first, as erasure does). `options` are the
    job's, as its engine's `options` made them.
    `input_key`: a stored image that is no upload (another job's output) as the input, when `upload` is
    None; `parent_job_id`: the job this one adds to (side views of a finished try-on).
    `claimed`: the caller waits for it and runs it right after commit, so it is created PROCESSING under
    a lease (as `claim` would leave it) instead of PENDING, saving a transaction; if the runner dies,
    the recovery fails it (releasing its credits) instead of running it for nobody.
    `waited`: the caller waits for it but a queue worker runs it: PENDING, marked WAITED all the same.
    `job_id`: the id its engine already works under (a waited job started before its commit)."""
    engine = engine_for(kind)
    await users_service.lock_open(session, user_id)
    job_id = job_id or uuid.uuid4()
    cost = engine.cost(ctx, options)
    lease: dict[str, Any] = {}
    if claimed or waited:
        options = {**options, WAITED: True}
    if waited and not claimed:
        wait_until = utcnow() + timedelta(seconds=ctx.settings.job_wait_timeout_seconds)
        options[WAIT_UNTIL] = wait_until.isoformat()
    if claimed:
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
            user_id=user_id,
            kind=kind.value,
            input_upload_id=upload.id if upload is not None else None,
            input_key=upload.storage_key if upload is not None else input_key,
            parent_job_id=parent_job_id,
            options=options,
            credits_reserved=cost,
            reservation_key=f"job:{job_id}:reserve" if cost else None,
            provider=engine.provider(ctx),
            **lease,
        )
    )
    if cost:
        assert job.reservation_key is not None
        await new_movements.hold_new(
            session, user_id, cost, job.reservation_key, reference=ledger_reference(job)
        )
    return job


@dataclass(frozen=True)
class JobRequest:
    """A job a client asks for with an input image: bytes sent with the request, or an upload of theirs;
    `options` are the job's (see `request`). `clean`: those bytes once validated (`with_clean_input`)."""

    kind: JobKind
    data: bytes | None
    upload_id: uuid.UUID | None
    options: dict[str, Any]
    clean: uploads_service.CleanImage | None = None


def request(
    kind: JobKind, data: bytes | None, upload_id: uuid.UUID | None, requested: dict[str, Any]
) -> JobRequest:
    """The request, with the client's options made the job's by its engine (normalised, clamped)."""
    return JobRequest(kind, data, upload_id, engine_for(kind).options(requested))


async def with_clean_input(ctx: Container, job: JobRequest) -> JobRequest:
    """The request with the image it sent validated and normalised now, as `submit_request` stores it
    (a refused image is its 400, before anything else is done)."""
    if job.data is None or job.clean is not None:
        return job
    allowed = engine_for(job.kind).input_formats
    return replace(job, clean=await uploads_service.cleaned(ctx, job.data, allowed=allowed))


@dataclass(frozen=True)
class Submitted:
    job: Job
    # The input's stored bytes when they came with the request: a job run at once need not fetch them.
    source: bytes | None


async def submit_request(
    session: AsyncSession,
    ctx: Container,
    user_id: uuid.UUID,
    job: JobRequest,
    *,
    claimed: bool = False,
    waited: bool = False,
    job_id: uuid.UUID | None = None,
) -> Submitted:
    """Store the input (or check the upload named) in the formats the kind's engine takes, and submit
    (see `submit`)."""
    allowed = engine_for(job.kind).input_formats
    source = None
    if job.data is not None:
        job = await with_clean_input(ctx, job)
        assert job.clean is not None
        stored = await uploads_service.store_clean(
            session, ctx, user_id, job.clean, origin=UploadOrigin.job_input
        )
        upload, source = stored.upload, stored.data
    elif job.upload_id is not None:
        upload = await uploads_service.get_owned(session, user_id, job.upload_id)
        if uploads_service.format_of(upload) not in allowed:
            raise uploads_service.NotAnImage(f"This endpoint takes {', '.join(sorted(allowed))} images.")
    else:
        raise uploads_service.EmptyUpload("Send a file or an upload_id.")
    try:
        made = await submit(
            session,
            ctx,
            user_id,
            job.kind,
            upload,
            job.options,
            claimed=claimed,
            waited=waited,
            job_id=job_id,
        )
    except BaseException:
        if job.data is not None:  # refused (402): the object stored a moment ago must not outlive its row
            await asyncio.shield(images_service.delete_objects(ctx, [upload.storage_key]))
        raise
    return Submitted(made, source)

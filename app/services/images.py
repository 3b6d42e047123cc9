"""The gallery: a user's jobs and their files, presented with expiring URLs; edits and deletion."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.errors import Conflict, NotFound
from app.integrations.storage import StorageError
from app.models import TERMINAL_STATUSES, Job, JobStatus, Upload, UploadOrigin, User
from app.repositories.images import (
    GalleryJob as GalleryJob,  # re-exported: what a gallery page's records are
)
from app.repositories.images import (
    GalleryUpload as GalleryUpload,
)
from app.repositories.images import (
    JobRepository,
    UploadRepository,
    gallery_jobs,
    gallery_uploads,
)
from app.services import credits
from app.services.engines import ENGINES, engine_for
from app.services.pagination import decode_cursor, encode_cursor

log = structlog.get_logger("app.images")


def output_key(user_id: uuid.UUID, job_id: uuid.UUID, view: str, extension: str) -> str:
    """Where a job's output is stored: the same place for every run of the job."""
    return f"users/{user_id}/jobs/{job_id}/{view}.{extension}"


def possible_output_keys(job: Job) -> list[str]:
    """Where an unfinished job's runner may have stored outputs before it stopped (its row lists them
    only once it completes): for cleaning up after a job that never will."""
    names = engine_for(job.kind).output_names(job.options)
    return [output_key(job.user_id, job.id, view, extension) for view, extension in names]


async def url_for(ctx: Container, key: str) -> str:
    return await ctx.storage.url(key, ctx.settings.signed_url_ttl_seconds)


async def get_job(session: AsyncSession, user: User, job_id: uuid.UUID) -> Job:
    job = await JobRepository(session).get_for_user(job_id, user.id)
    if job is None:
        raise NotFound("No such image.")
    return job


GalleryItem = Job | Upload
GalleryRecord = GalleryJob | GalleryUpload
ItemT = TypeVar("ItemT", Job | Upload, GalleryJob | GalleryUpload)
UPLOAD_KIND = "upload"


async def get_item(session: AsyncSession, user: User, item_id: uuid.UUID) -> GalleryItem:
    """A job or a direct upload of this user; anyone else's id is simply not found."""
    job = await JobRepository(session).get_for_user(item_id, user.id)
    if job is not None:
        return job
    upload = await UploadRepository(session).get_for_user(item_id, user.id)
    if upload is None or upload.origin != UploadOrigin.direct.value:
        raise NotFound("No such image.")
    return upload


@dataclass(frozen=True)
class GalleryPage(Generic[ItemT]):
    items: list[ItemT]
    next_cursor: str | None


async def gallery(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    kind: str | None,
    status: str | None,
    favourite: bool | None,
    top_level_only: bool = False,
) -> GalleryPage[GalleryItem]:
    """Jobs and direct uploads in one newest-first list. Both tables are read past the same keyset
    cursor and merged; an upload counts as COMPLETED (it is there, ready to use). `top_level_only`:
    without child jobs (side views made later), for clients that show them under their parent
    (`latest_children`)."""
    before = decode_cursor(cursor) if cursor else None
    jobs: list[Job] = []
    if kind != UPLOAD_KIND:
        jobs = await JobRepository(session).page_for_user(
            user_id, limit + 1, before, kind, status, favourite, top_level_only
        )
    uploads: list[Upload] = []
    if _lists_uploads(kind, status):
        uploads = await UploadRepository(session).page_for_user(user_id, limit + 1, before, favourite)
    return _merged_page([*jobs, *uploads], limit)


async def gallery_records(
    database: Database,
    user_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    kind: str | None,
    status: str | None,
    favourite: bool | None,
) -> GalleryPage[GalleryRecord]:
    """`gallery` as plain records, read on a reading connection: the page every gallery screen asks
    for again and again, without an ORM object (or a transaction) per row."""
    before = decode_cursor(cursor) if cursor else None
    async with database.reading() as reader:
        jobs: list[GalleryJob] = []
        if kind != UPLOAD_KIND:
            jobs = await gallery_jobs(reader, user_id, limit + 1, before, kind, status, favourite)
        uploads: list[GalleryUpload] = []
        if _lists_uploads(kind, status):
            uploads = await gallery_uploads(reader, user_id, limit + 1, before, favourite)
    return _merged_page([*jobs, *uploads], limit)


def _lists_uploads(kind: str | None, status: str | None) -> bool:
    return kind in (None, UPLOAD_KIND) and status in (None, JobStatus.completed.value)


def _merged_page(items: list[ItemT], limit: int) -> GalleryPage[ItemT]:
    items.sort(key=lambda item: (item.created_at, item.id), reverse=True)
    last = items[limit - 1] if len(items) > limit else None
    return GalleryPage(items[:limit], encode_cursor(last.created_at, last.id) if last else None)


async def count_jobs(
    session: AsyncSession, user: User, *, kind: str | None, favourite: bool | None, top_level_only: bool
) -> int:
    """How many jobs the gallery holds with these filters (all pages)."""
    return await JobRepository(session).count_for_user(user.id, kind, favourite, top_level_only)


async def latest_children(session: AsyncSession, user: User, parents: list[Job]) -> dict[uuid.UUID, Job]:
    """Each parent's latest completed child job (its side views), for those that have one."""
    children = await JobRepository(session).children_of(user.id, [parent.id for parent in parents])
    latest: dict[uuid.UUID, Job] = {}
    for child in children:  # oldest first: a later one replaces an earlier one
        if child.parent_job_id is not None and child.status == JobStatus.completed.value:
            latest[child.parent_job_id] = child
    return latest


async def status_changes(
    ctx: Container,
    user_id: uuid.UUID,
    job_id: uuid.UUID,
    poll_seconds: float = 1.0,
    limit_seconds: float = 900,
) -> AsyncIterator[Job]:
    """The job each time its status (or outputs) change, ending at a terminal state. Each look is its own
    short transaction, so an open stream holds no connection."""
    last: tuple[str, int] | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_seconds
    while loop.time() < deadline:
        async with ctx.database.session_scope() as session:
            job = await JobRepository(session).get_for_user(job_id, user_id)
        if job is None:
            return
        state = (job.status, len(job.outputs))
        if state != last:
            last = state
            yield job
        if job.status in TERMINAL_STATUSES:
            return
        await asyncio.sleep(poll_seconds)


async def update_item(
    session: AsyncSession, user: User, item_id: uuid.UUID, changes: dict[str, Any]
) -> GalleryItem:
    item = await get_item(session, user, item_id)
    for name, value in changes.items():
        setattr(item, name, value)
    await session.flush()
    return item


async def delete_item(session: AsyncSession, ctx: Container, user: User, item_id: uuid.UUID) -> None:
    item = await get_item(session, user, item_id)
    if isinstance(item, Upload):
        await _delete_upload(session, ctx, item)
        return
    if item.status not in TERMINAL_STATUSES:
        # Its credits are held and a worker may be writing its outputs: let it finish (or fail) first.
        raise Conflict("This image is still being processed; delete it once it has finished.")
    await delete_objects(ctx, [output["key"] for output in item.outputs])
    await session.delete(item)
    await session.flush()


async def _delete_upload(session: AsyncSession, ctx: Container, upload: Upload) -> None:
    """The upload's row and object. Jobs made from it keep their results but lose the link to an input
    that no longer exists; a job still running on it must finish first."""
    users = await JobRepository(session).using_upload(upload.id)
    if any(job.status not in TERMINAL_STATUSES for job in users):
        raise Conflict("A job is still using this image; delete it once the job has finished.")
    for job in users:
        job.input_key = None
    await delete_objects(ctx, [upload.storage_key])
    await session.delete(upload)
    await session.flush()


async def delete_user_files(session: AsyncSession, ctx: Container, user_id: uuid.UUID) -> None:
    """Erasure: every job and upload of the user, rows and objects. The caller holds the user's lock, so
    no job or upload is being created meanwhile; each job is locked before its credits are touched (the
    order a completing worker takes them in), so a job either completed before (and was charged) or its
    worker finds it gone, charges nothing and deletes what it stored."""
    for job in await JobRepository(session).for_user(user_id, for_update=True):
        if job.status not in TERMINAL_STATUSES:
            if job.reservation_key:  # never charge an erased account's last job
                await credits.release(session, job.reservation_key)
            # Its worker may have stored outputs already; if it is alive it deletes what it stores later.
            await delete_objects(ctx, possible_output_keys(job))
        await delete_objects(ctx, [output["key"] for output in job.outputs])
        await session.delete(job)
    for upload in await UploadRepository(session).for_user(user_id):
        await delete_objects(ctx, [upload.storage_key])
        await session.delete(upload)
    await session.flush()


async def delete_objects(ctx: Container, keys: list[str]) -> None:
    for key in keys:
        try:
            await ctx.storage.delete(key)
        except StorageError:
            # An orphaned object costs storage, a failed deletion must not keep the row: log and go on.
            log.warning("storage.delete_failed", key=key)


async def sweep_expired(ctx: Container, now: datetime | None = None, batch: int = 200) -> dict[str, int]:
    """Delete images older than their kind's retention (0 keeps them forever), and nothing younger."""
    now = now or utcnow()
    settings = ctx.settings
    removed: dict[str, int] = {}
    for kind, engine in ENGINES.items():
        hours = engine.retention_hours(ctx)
        if not hours:
            continue
        async with ctx.database.session_scope() as session:
            expired = [
                job
                for job in await JobRepository(session).older_than(
                    kind.value, now - timedelta(hours=hours), batch
                )
                if job.status in TERMINAL_STATUSES  # an unfinished job is the recovery's, not the sweep's
            ]
            for job in expired:
                await delete_objects(ctx, [output["key"] for output in job.outputs])
                await session.delete(job)
            removed[kind.value] = len(expired)
    if settings.retention_hours_uploads:
        async with ctx.database.session_scope() as session:
            uploads: list[Upload] = await UploadRepository(session).older_than(
                now - timedelta(hours=settings.retention_hours_uploads), batch
            )
            swept = 0
            for upload in uploads:
                try:
                    await _delete_upload(session, ctx, upload)
                except Conflict:
                    continue  # a job still runs on it: the next sweep takes it
                swept += 1
            removed["uploads"] = swept
    if any(removed.values()):
        log.info("retention.swept", **removed)
    return removed

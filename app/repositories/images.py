from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import BindParameter

from app.models import Job, JobStatus, Style, Upload, UploadOrigin
from app.repositories.base import Repository


def _before(
    created_at: InstrumentedAttribute[datetime],
    id_: InstrumentedAttribute[uuid.UUID],
    cursor: tuple[datetime, uuid.UUID],
) -> ColumnElement[bool]:
    """Keyset condition for newest-first pages: strictly after the cursor's (created_at, id)."""
    moment, last_id = cursor
    return or_(created_at < moment, (created_at == moment) & (id_ < last_id))


# --- the gallery's page, read on a reading connection (Core rows into plain records, no ORM objects) ----
# Not frozen: a frozen dataclass sets each field through object.__setattr__, several times the cost of a
# plain one, for each of a page's forty records.


@dataclass(slots=True)
class GalleryJob:
    """What a gallery page shows of a job."""

    id: uuid.UUID
    kind: str
    status: str
    input_key: str | None
    outputs: list[dict[str, Any]]
    options: dict[str, Any]
    credits_reserved: int
    attempts: int
    error_code: str | None
    error_message: str | None
    time_taken_ms: int | None
    is_favourite: bool
    description: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(slots=True)
class GalleryUpload:
    """What a gallery page shows of a direct upload."""

    id: uuid.UUID
    storage_key: str
    content_type: str
    width: int
    height: int
    size: int
    is_favourite: bool
    description: str | None
    created_at: datetime


_GALLERY_JOB_COLUMNS = [getattr(Job, name) for name in GalleryJob.__slots__]
_GALLERY_UPLOAD_COLUMNS = [getattr(Upload, name) for name in GalleryUpload.__slots__]


async def gallery_jobs(
    reader: AsyncConnection,
    user_id: uuid.UUID,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
    kind: str | None,
    status: str | None,
    favourite: bool | None,
) -> list[GalleryJob]:
    """`JobRepository.page_for_user`, as gallery records."""
    filters = (kind is not None, status is not None, favourite is not None, before is not None)
    statement = _gallery_jobs_statement(*filters)
    values: dict[str, Any] = {"user_id": user_id, "kind": kind, "status": status, "favourite": favourite}
    values["limit"] = limit
    if before is not None:
        values.update(moment=before[0], last_id=before[1])
    return [GalleryJob(*row) for row in await reader.execute(statement, values)]


async def gallery_uploads(
    reader: AsyncConnection,
    user_id: uuid.UUID,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
    favourite: bool | None,
) -> list[GalleryUpload]:
    """`UploadRepository.page_for_user`, as gallery records."""
    statement = _gallery_uploads_statement(favourite is not None, before is not None)
    values: dict[str, Any] = {"user_id": user_id, "favourite": favourite, "limit": limit}
    if before is not None:
        values.update(moment=before[0], last_id=before[1])
    return [GalleryUpload(*row) for row in await reader.execute(statement, values)]


# A page's statements, built once for each combination of filters (their values are bound): building a
# statement cost a gallery page more than running it.
@cache
def _gallery_jobs_statement(kind: bool, status: bool, favourite: bool, before: bool) -> Select[Any]:
    conditions: list[ColumnElement[bool]] = [Job.user_id == bindparam("user_id")]
    if kind:
        conditions.append(Job.kind == bindparam("kind"))
    if status:
        conditions.append(Job.status == bindparam("status"))
    if favourite:
        conditions.append(Job.is_favourite == bindparam("favourite"))
    if before:
        conditions.append(_before_bound(Job.created_at, Job.id))
    return _newest_first_page(_GALLERY_JOB_COLUMNS, conditions, Job.created_at, Job.id)


@cache
def _gallery_uploads_statement(favourite: bool, before: bool) -> Select[Any]:
    conditions: list[ColumnElement[bool]] = [
        Upload.user_id == bindparam("user_id"),
        Upload.origin == UploadOrigin.direct.value,
    ]
    if favourite:
        conditions.append(Upload.is_favourite == bindparam("favourite"))
    if before:
        conditions.append(_before_bound(Upload.created_at, Upload.id))
    return _newest_first_page(_GALLERY_UPLOAD_COLUMNS, conditions, Upload.created_at, Upload.id)


def _newest_first_page(
    columns: list[InstrumentedAttribute[Any]],
    conditions: list[ColumnElement[bool]],
    created_at: InstrumentedAttribute[datetime],
    id_: InstrumentedAttribute[uuid.UUID],
) -> Select[Any]:
    return (
        select(*columns).where(*conditions).order_by(created_at.desc(), id_.desc()).limit(bindparam("limit"))
    )


def _before_bound(
    created_at: InstrumentedAttribute[datetime], id_: InstrumentedAttribute[uuid.UUID]
) -> ColumnElement[bool]:
    """`_before`, its cursor bound as `moment` and `last_id`."""
    moment: BindParameter[datetime] = bindparam("moment")
    return or_(created_at < moment, (created_at == moment) & (id_ < bindparam("last_id")))


def _upload_filters(user_id: uuid.UUID, favourite: bool | None) -> list[ColumnElement[bool]]:
    """A user's own (direct) uploads; inline ones belong to their jobs."""
    conditions = [Upload.user_id == user_id, Upload.origin == UploadOrigin.direct.value]
    if favourite is not None:
        conditions.append(Upload.is_favourite.is_(favourite))
    return conditions


def _job_filters(
    user_id: uuid.UUID, kind: str | None, status: str | None, favourite: bool | None, top_level: bool
) -> list[ColumnElement[bool]]:
    conditions = [Job.user_id == user_id]
    if kind is not None:
        conditions.append(Job.kind == kind)
    if status is not None:
        conditions.append(Job.status == status)
    if favourite is not None:
        conditions.append(Job.is_favourite.is_(favourite))
    if top_level:
        conditions.append(Job.parent_job_id.is_(None))
    return conditions


class UploadRepository(Repository[Upload]):
    model = Upload

    async def get_for_user(self, upload_id: uuid.UUID, user_id: uuid.UUID) -> Upload | None:
        return await self.session.scalar(
            select(Upload).where(Upload.id == upload_id, Upload.user_id == user_id)
        )

    async def page_for_user(
        self,
        user_id: uuid.UUID,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
        favourite: bool | None,
    ) -> list[Upload]:
        """The user's own (direct) uploads, newest first; inline ones belong to their jobs."""
        statement = select(Upload).where(*_upload_filters(user_id, favourite))
        if before is not None:
            statement = statement.where(_before(Upload.created_at, Upload.id, before))
        statement = statement.order_by(Upload.created_at.desc(), Upload.id.desc()).limit(limit)
        return list(await self.session.scalars(statement))

    async def older_than(self, moment: datetime, limit: int) -> list[Upload]:
        return list(await self.session.scalars(select(Upload).where(Upload.created_at < moment).limit(limit)))

    async def for_user(self, user_id: uuid.UUID) -> list[Upload]:
        return list(await self.session.scalars(select(Upload).where(Upload.user_id == user_id)))


class JobRepository(Repository[Job]):
    model = Job

    async def get_for_user(self, job_id: uuid.UUID, user_id: uuid.UUID) -> Job | None:
        return await self.session.scalar(select(Job).where(Job.id == job_id, Job.user_id == user_id))

    async def claim(self, job_id: uuid.UUID, now: datetime, lease_until: datetime) -> bool:
        """PENDING (or PROCESSING past its lease) -> PROCESSING for one worker only."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(Job)
            .where(
                Job.id == job_id,
                or_(
                    Job.status == JobStatus.pending.value,
                    (Job.status == JobStatus.processing.value) & (Job.lease_until < now),
                ),
            )
            .values(
                status=JobStatus.processing.value,
                attempts=Job.attempts + 1,
                started_at=now,
                lease_until=lease_until,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    async def stale(self, now: datetime, pending_before: datetime, limit: int) -> list[Job]:
        """PROCESSING past their lease, and PENDING that no worker picked up in time."""
        statement = (
            select(Job)
            .where(
                or_(
                    (Job.status == JobStatus.processing.value) & (Job.lease_until < now),
                    (Job.status == JobStatus.pending.value) & (Job.created_at < pending_before),
                )
            )
            .order_by(Job.created_at)
            .limit(limit)
        )
        return list(await self.session.scalars(statement))

    async def page_for_user(
        self,
        user_id: uuid.UUID,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
        kind: str | None,
        status: str | None,
        favourite: bool | None,
        top_level: bool = False,
    ) -> list[Job]:
        """`top_level`: without child jobs (side views made later), which their parent presents."""
        statement = self._of_user(user_id, kind, status, favourite, top_level)
        if before is not None:
            statement = statement.where(_before(Job.created_at, Job.id, before))
        statement = statement.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        return list(await self.session.scalars(statement))

    async def count_for_user(
        self, user_id: uuid.UUID, kind: str | None, favourite: bool | None, top_level: bool
    ) -> int:
        """How many jobs `page_for_user` pages through with the same filters."""
        statement = self._of_user(user_id, kind, None, favourite, top_level)
        return int(await self.session.scalar(select(func.count()).select_from(statement.subquery())) or 0)

    @staticmethod
    def _of_user(
        user_id: uuid.UUID, kind: str | None, status: str | None, favourite: bool | None, top_level: bool
    ) -> Select[Job]:
        return select(Job).where(*_job_filters(user_id, kind, status, favourite, top_level))

    async def children_of(self, user_id: uuid.UUID, parent_ids: list[uuid.UUID]) -> list[Job]:
        """The user's child jobs of these parents, oldest first."""
        if not parent_ids:
            return []
        statement = (
            select(Job)
            .where(Job.user_id == user_id, Job.parent_job_id.in_(parent_ids))
            .order_by(Job.created_at, Job.id)
        )
        return list(await self.session.scalars(statement))

    async def older_than(self, kind: str, moment: datetime, limit: int) -> list[Job]:
        statement = select(Job).where(Job.kind == kind, Job.created_at < moment).limit(limit)
        return list(await self.session.scalars(statement))

    async def for_user(self, user_id: uuid.UUID, *, for_update: bool = False) -> list[Job]:
        """`for_update`: each row locked (in id order) and re-read, so a worker completing one of them
        either finished before or finds it gone."""
        statement = select(Job).where(Job.user_id == user_id)
        if for_update:
            statement = statement.order_by(Job.id).with_for_update().execution_options(populate_existing=True)
        return list(await self.session.scalars(statement))

    async def using_upload(self, upload_id: uuid.UUID) -> list[Job]:
        return list(await self.session.scalars(select(Job).where(Job.input_upload_id == upload_id)))


class StyleRepository(Repository[Style]):
    model = Style

    async def active(self, category: str | None = None) -> list[Style]:
        statement = select(Style).where(Style.is_active.is_(True)).order_by(Style.sort_order, Style.name)
        if category is not None:
            statement = statement.where(Style.category == category)
        return list(await self.session.scalars(statement))

    async def by_ids(self, style_ids: list[uuid.UUID]) -> list[Style]:
        """These styles, active or not (a job keeps the name of a style retired since)."""
        if not style_ids:
            return []
        return list(await self.session.scalars(select(Style).where(Style.id.in_(style_ids))))

    async def active_categories(self) -> list[tuple[str, int]]:
        statement = (
            select(Style.category, func.count())
            .where(Style.is_active.is_(True))
            .group_by(Style.category)
            .order_by(Style.category)
        )
        return [(category, int(count)) for category, count in (await self.session.execute(statement)).all()]

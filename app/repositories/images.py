from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import CursorResult

from app.models import Job, JobStatus, Style, Upload
from app.repositories.base import Repository


class UploadRepository(Repository[Upload]):
    model = Upload

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
    ) -> list[Job]:
        statement = select(Job).where(Job.user_id == user_id)
        if kind is not None:
            statement = statement.where(Job.kind == kind)
        if status is not None:
            statement = statement.where(Job.status == status)
        if favourite is not None:
            statement = statement.where(Job.is_favourite.is_(favourite))
        if before is not None:
            created_at, job_id = before
            statement = statement.where(
                or_(Job.created_at < created_at, (Job.created_at == created_at) & (Job.id < job_id))
            )
        statement = statement.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        return list(await self.session.scalars(statement))

    async def older_than(self, kind: str, moment: datetime, limit: int) -> list[Job]:
        statement = select(Job).where(Job.kind == kind, Job.created_at < moment).limit(limit)
        return list(await self.session.scalars(statement))

    async def for_user(self, user_id: uuid.UUID) -> list[Job]:
        return list(await self.session.scalars(select(Job).where(Job.user_id == user_id)))


class StyleRepository(Repository[Style]):
    model = Style

    async def active(self) -> list[Style]:
        statement = select(Style).where(Style.is_active.is_(True)).order_by(Style.sort_order, Style.name)
        return list(await self.session.scalars(statement))

"""Queries of the audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, or_, select

from app.models import AuditLog
from app.repositories.base import Repository


class AuditLogRepository(Repository[AuditLog]):
    model = AuditLog

    async def page(
        self,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None = None,
        actions: list[str] | None = None,
        actor_id: uuid.UUID | None = None,
        subject_id: uuid.UUID | None = None,
        concerning: uuid.UUID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AuditLog]:
        """Newest first, keyset-paginated on (created_at, id). `concerning` matches actor or subject."""
        statement: Select[Any] = select(AuditLog)
        if actions:
            statement = statement.where(AuditLog.action.in_(actions))
        if actor_id is not None:
            statement = statement.where(AuditLog.actor_id == actor_id)
        if subject_id is not None:
            statement = statement.where(AuditLog.subject_id == subject_id)
        if concerning is not None:
            mentioned = or_(AuditLog.actor_id == concerning, AuditLog.subject_id == concerning)
            statement = statement.where(mentioned)
        if since is not None:
            statement = statement.where(AuditLog.created_at >= since)
        if until is not None:
            statement = statement.where(AuditLog.created_at < until)
        if after is not None:
            created_at, row_id = after
            statement = statement.where(
                or_(
                    AuditLog.created_at < created_at,
                    and_(AuditLog.created_at == created_at, AuditLog.id < row_id),
                )
            )
        statement = statement.order_by(AuditLog.created_at.desc(), AuditLog.id.desc()).limit(limit)
        return list(await self.session.scalars(statement))

    async def delete_older_than(self, cutoff: datetime) -> int:
        result = await self.session.execute(delete(AuditLog).where(AuditLog.created_at < cutoff))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

"""The alert claims (`alert_states`) and the few counts the alert conditions read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.upsert import insert_if_absent
from app.models import AdjustmentKind, AlertState, Job, JobStatus, OrderAdjustment


class AlertRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(self, kind: str, now: datetime, sent_before: datetime) -> tuple[bool, datetime | None]:
        """Marks `kind` sent at `now` unless it was sent after `sent_before`: (claimed, the previous
        time). One conditional UPDATE decides, so of two processes claiming at once only one wins (the
        other's UPDATE waits for the row and then finds it sent)."""
        await insert_if_absent(self.session, AlertState, {"kind": kind, "last_sent_at": None})
        previous = await self.session.scalar(select(AlertState.last_sent_at).where(AlertState.kind == kind))
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(AlertState)
            .where(
                AlertState.kind == kind,
                or_(AlertState.last_sent_at.is_(None), AlertState.last_sent_at <= sent_before),
            )
            .values(last_sent_at=now)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1, previous

    async def release(self, kind: str, claimed_at: datetime, previous: datetime | None) -> None:
        """Undoes our claim (the message could not be delivered), unless a later claim replaced it."""
        await self.session.execute(
            update(AlertState)
            .where(AlertState.kind == kind, AlertState.last_sent_at == claimed_at)
            .values(last_sent_at=previous)
            .execution_options(synchronize_session=False)
        )

    async def job_outcomes_since(self, since: datetime) -> tuple[int, int]:
        """(finished, failed) among the jobs created since `since` (the created_at index; a job lives
        seconds to minutes, so the jobs created in a window are, nearly, those that ended in it)."""
        rows = await self.session.execute(
            select(Job.status, func.count())
            .where(
                Job.created_at >= since, Job.status.in_([JobStatus.completed.value, JobStatus.failed.value])
            )
            .group_by(Job.status)
        )
        counts = {status: int(count) for status, count in rows.all()}
        return sum(counts.values()), counts.get(JobStatus.failed.value, 0)

    async def adjustments_since(self, since: datetime) -> int:
        """Refunds and chargebacks (disputes) providers told us of since `since` (won disputes aside)."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(OrderAdjustment)
            .where(
                OrderAdjustment.created_at >= since,
                OrderAdjustment.kind.in_([AdjustmentKind.refund.value, AdjustmentKind.chargeback.value]),
            )
        )
        return int(count or 0)

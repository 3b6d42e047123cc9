from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from app.db.base import utcnow
from app.db.upsert import insert_or_lock
from app.models import WebhookEvent, WebhookStatus
from app.repositories.base import Repository


class WebhookEventRepository(Repository[WebhookEvent]):
    model = WebhookEvent

    async def record(self, provider: str, event_id: str, event_type: str, payload: dict[str, Any]) -> bool:
        """True for a first delivery. Either way the event's row is locked by this transaction when it
        returns: a concurrent duplicate waits here until the first delivery's transaction ends."""
        return await insert_or_lock(
            self.session,
            WebhookEvent,
            {
                "id": uuid.uuid4(),
                "provider": provider,
                "event_id": event_id,
                "event_type": event_type,
                "payload": payload,
                "received_at": utcnow(),
                "status": WebhookStatus.received.value,
            },
            key=("provider", "event_id"),
        )

    async def get_event(self, provider: str, event_id: str) -> WebhookEvent | None:
        """The event as stored now (call after `record`, which locked it)."""
        return await self.session.scalar(
            select(WebhookEvent)
            .where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
            .execution_options(populate_existing=True)
        )

    async def record_error(self, provider: str, event_id: str, error: str) -> None:
        await self.session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
            .values(error=error[:4000], status=WebhookStatus.failed.value)
        )

    async def mark_handled(self, provider: str, event_id: str, now: datetime, status: WebhookStatus) -> None:
        await self.session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
            .values(handled_at=now, error=None, status=status.value)
        )

    async def lock(self, row_id: uuid.UUID) -> WebhookEvent | None:
        """The event by its row id, locked by this transaction: a no-op UPDATE takes the row lock on every
        database (SQLite's write lock too), so a replay waits for a concurrent delivery or replay."""
        # (Not read back from the row count: MySQL's count of a no-op update depends on a client flag.)
        await self.session.execute(
            update(WebhookEvent).where(WebhookEvent.id == row_id).values(status=WebhookEvent.status)
        )
        return await self.session.scalar(
            select(WebhookEvent).where(WebhookEvent.id == row_id).execution_options(populate_existing=True)
        )

    async def page(
        self,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None = None,
        statuses: list[str] | None = None,
        provider: str | None = None,
    ) -> list[WebhookEvent]:
        """Newest first (keyset on received_at, id)."""
        statement = select(WebhookEvent)
        if statuses:
            statement = statement.where(WebhookEvent.status.in_(statuses))
        if provider:
            statement = statement.where(WebhookEvent.provider == provider)
        if after is not None:
            received_at, row_id = after
            statement = statement.where(
                or_(
                    WebhookEvent.received_at < received_at,
                    and_(WebhookEvent.received_at == received_at, WebhookEvent.id < row_id),
                )
            )
        statement = statement.order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc())
        return list(await self.session.scalars(statement.limit(limit)))

    async def count_failed_since_before(self, received_before: datetime) -> int:
        """Failed events received before the moment (the index on status, received_at answers it)."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(WebhookEvent)
            .where(
                WebhookEvent.status == WebhookStatus.failed.value,
                WebhookEvent.received_at < received_before,
            )
        )
        return int(count or 0)

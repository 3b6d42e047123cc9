from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from app.db.base import utcnow
from app.db.upsert import insert_or_lock
from app.models import WebhookEvent
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
            .values(error=error[:4000])
        )

    async def mark_handled(self, provider: str, event_id: str, now: datetime) -> None:
        await self.session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
            .values(handled_at=now, error=None)
        )

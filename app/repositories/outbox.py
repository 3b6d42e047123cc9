from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult

from app.models import EmailStatus, OutboxEmail
from app.repositories.base import Repository


class OutboxRepository(Repository[OutboxEmail]):
    model = OutboxEmail

    async def due_ids(self, now: datetime, limit: int) -> list[uuid.UUID]:
        result = await self.session.scalars(
            select(OutboxEmail.id)
            .where(OutboxEmail.status == EmailStatus.pending.value, OutboxEmail.next_attempt_at <= now)
            .order_by(OutboxEmail.next_attempt_at)
            .limit(limit)
        )
        return list(result)

    async def claim(self, email_id: uuid.UUID, now: datetime, lease_until: datetime) -> bool:
        """Take a due message for one sender: pushing its next attempt past the lease makes every other
        worker skip it, and a sender that dies mid-way leaves it to be retried after the lease."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(OutboxEmail)
            .where(
                OutboxEmail.id == email_id,
                OutboxEmail.status == EmailStatus.pending.value,
                OutboxEmail.next_attempt_at <= now,
            )
            .values(next_attempt_at=lease_until, attempts=OutboxEmail.attempts + 1)
        )
        return result.rowcount == 1

    async def list_for_user(self, user_id: uuid.UUID) -> list[OutboxEmail]:
        return list(await self.session.scalars(select(OutboxEmail).where(OutboxEmail.user_id == user_id)))

    async def delete_for_user(self, user_id: uuid.UUID) -> None:
        await self.session.execute(delete(OutboxEmail).where(OutboxEmail.user_id == user_id))

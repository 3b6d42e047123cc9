from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UUIDPrimaryKeyMixin, utcnow


class WebhookStatus(StrEnum):
    """Where a stored event stands: `received` while its first application runs, then `processed`,
    `ignored` (about nothing of ours) or `failed` (its effect raised; the error is kept, a provider retry
    or an admin replay applies it again)."""

    received = "received"
    processed = "processed"
    ignored = "ignored"
    failed = "failed"


class WebhookEvent(UUIDPrimaryKeyMixin, Base):
    """Every verified webhook delivery, recorded in the same transaction as its effect. The unique
    (provider, event_id) pair is what makes a redelivery change nothing."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        # The admin list by status and readiness' count of old failures.
        Index("ix_webhook_events_status_received_at", "status", "received_at"),
    )

    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    handled_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=WebhookStatus.received.value)

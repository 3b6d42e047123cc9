from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDPrimaryKeyMixin, utcnow


class EmailStatus(StrEnum):
    pending = "pending"
    sent = "sent"
    failed = "failed"


class OutboxEmail(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """An email written in the same transaction as the change that caused it and delivered after
    commit, so a crash or a provider outage delays a message but never loses it."""

    __tablename__ = "email_outbox"

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    tag: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=EmailStatus.pending.value, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    last_error: Mapped[str | None] = mapped_column(String(500))
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    sent_at: Mapped[datetime | None]

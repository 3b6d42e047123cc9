"""The audit trail: one row per security or money event, written in the transaction of the event."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UUIDPrimaryKeyMixin, utcnow


class AuditAction(StrEnum):
    """What happened. Stored as a string: a new action needs no migration."""

    login_succeeded = "login.succeeded"
    login_failed = "login.failed"
    password_reset_requested = "password_reset.requested"
    password_reset_completed = "password_reset.completed"
    api_key_created = "api_key.created"
    api_key_revoked = "api_key.revoked"
    role_changed = "user.role_changed"
    user_banned = "user.banned"
    user_unbanned = "user.unbanned"
    credits_adjusted = "credits.adjusted"
    account_deleted = "account.deleted"
    account_exported = "account.exported"
    payment_credited = "payment.credited"
    payment_refunded = "payment.refunded"
    payment_disputed = "payment.disputed"
    webhook_refused = "webhook.refused"
    style_created = "style.created"
    style_updated = "style.updated"
    style_deleted = "style.deleted"
    plan_created = "plan.created"
    plan_updated = "plan.updated"
    plan_retired = "plan.retired"
    webhook_replayed = "webhook.replayed"


class AuditLog(UUIDPrimaryKeyMixin, Base):
    """Who (`actor_id`, none for an anonymous caller or a provider) did what (`action`) to whom
    (`subject_id`), from where (`ip`, `request_id`), with a few non-secret facts (`details`).

    The ids are not foreign keys: the trail outlives the accounts it mentions (an erased account's
    deletion stays on record)."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_created_at", "created_at"),
        Index("ix_audit_logs_action_created_at", "action", "created_at"),
        Index("ix_audit_logs_actor_id_created_at", "actor_id", "created_at"),
        Index("ix_audit_logs_subject_id_created_at", "subject_id", "created_at"),
    )

    action: Mapped[str] = mapped_column(String(48))
    actor_id: Mapped[uuid.UUID | None]
    subject_id: Mapped[uuid.UUID | None]
    ip: Mapped[str | None] = mapped_column(String(45))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

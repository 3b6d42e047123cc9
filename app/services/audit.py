"""The audit trail: `record()` adds one row to the caller's transaction, so the row is committed (or
rolled back) with the event it describes.

Details are small, non-secret facts: never a password, token, key or its hash. Keys named like a secret
are refused outright, so a careless call fails in tests instead of leaking into the trail."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.models import AuditAction, AuditLog
from app.repositories.audit import AuditLogRepository
from app.services.pagination import decode_cursor, encode_cursor

# Set for each request by the request-context middleware (app/middleware.py).
client_ip: ContextVar[str | None] = ContextVar("audit_client_ip", default=None)

_SECRET_WORDS = ("password", "token", "secret", "hash", "authorization", "cookie", "api_key", "key_material")

# What a user sees of their own account in GET /users/me/activity.
SECURITY_ACTIONS = [
    AuditAction.login_succeeded.value,
    AuditAction.login_failed.value,
    AuditAction.password_reset_requested.value,
    AuditAction.password_reset_completed.value,
    AuditAction.api_key_created.value,
    AuditAction.api_key_revoked.value,
    AuditAction.role_changed.value,
    AuditAction.user_banned.value,
    AuditAction.user_unbanned.value,
    AuditAction.credits_adjusted.value,
    AuditAction.account_exported.value,
]

MAX_DETAIL_CHARS = 200


def _clean(details: dict[str, Any] | None) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for name, value in (details or {}).items():
        if any(word in name.lower() for word in _SECRET_WORDS):
            raise ValueError(f"audit details may not carry secrets ({name!r})")
        if isinstance(value, str):
            value = value[:MAX_DETAIL_CHARS]
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif not isinstance(value, int | float | bool) and value is not None:
            value = str(value)[:MAX_DETAIL_CHARS]
        cleaned[name] = value
    return cleaned


async def record(
    session: AsyncSession,
    *,
    action: AuditAction | str,
    actor_id: uuid.UUID | None = None,
    subject_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditLog:
    """One audit row in the session's transaction. ip and request id default to the current request's."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    row = AuditLog(
        action=str(action.value if isinstance(action, AuditAction) else action),
        actor_id=actor_id,
        subject_id=subject_id,
        ip=(ip or client_ip.get() or None),
        request_id=str(request_id)[:64] if request_id else None,
        details=_clean(details),
        created_at=utcnow(),
    )
    return await AuditLogRepository(session).add(row)


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditLog]
    next_cursor: str | None


async def page(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None = None,
    actions: list[str] | None = None,
    actor_id: uuid.UUID | None = None,
    subject_id: uuid.UUID | None = None,
    concerning: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditPage:
    """Newest first; pass `next_cursor` back as `cursor` for the next page."""
    rows = await AuditLogRepository(session).page(
        limit=limit + 1,
        after=decode_cursor(cursor) if cursor else None,
        actions=actions,
        actor_id=actor_id,
        subject_id=subject_id,
        concerning=concerning,
        since=since,
        until=until,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return AuditPage(rows, encode_cursor(last.created_at, last.id) if last else None)


async def activity(session: AsyncSession, user_id: uuid.UUID, limit: int, cursor: str | None) -> AuditPage:
    """A user's own security events: what they did and what was done to their account."""
    return await page(session, limit=limit, cursor=cursor, actions=SECURITY_ACTIONS, concerning=user_id)


async def sweep_expired(session: AsyncSession, retention_days: int) -> int:
    """Delete rows older than the retention; 0 days keeps everything."""
    if retention_days <= 0:
        return 0
    return await AuditLogRepository(session).delete_older_than(utcnow() - timedelta(days=retention_days))

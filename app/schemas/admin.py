"""Shapes of the admin API and of a user's own activity."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.schemas.base import Schema


class AuditLogOut(Schema):
    id: uuid.UUID
    action: str
    actor_id: uuid.UUID | None
    subject_id: uuid.UUID | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]
    created_at: datetime


class AuditLogPageOut(Schema):
    items: list[AuditLogOut]
    next_cursor: str | None

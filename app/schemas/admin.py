"""Shapes of the admin API and of a user's own activity."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from app.schemas.base import Schema
from app.schemas.users import Credits


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


class AdminUserOut(Schema):
    id: uuid.UUID
    email: str | None
    name: str | None
    plan: str
    role: str
    banned: bool
    email_verified: bool
    created_at: datetime
    last_login_at: datetime | None
    credits: Credits
    reserved: Credits


class AdminUserPageOut(Schema):
    items: list[AdminUserOut]
    next_cursor: str | None


class BanIn(Schema):
    reason: str | None = Field(default=None, max_length=200, description="Why; kept in the audit trail.")

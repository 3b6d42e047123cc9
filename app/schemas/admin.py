"""Shapes of the admin API and of a user's own activity."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, model_validator

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


ThumbnailUrl = Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")]


class StyleAdminOut(Schema):
    id: uuid.UUID
    name: str
    description: str | None
    prompt: str
    thumbnail_url: str | None
    is_active: bool
    sort_order: int
    created_at: datetime
    updated_at: datetime


class StyleCreateIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    prompt: str = Field(min_length=1, max_length=2000, description="What the model is asked for.")
    thumbnail_url: ThumbnailUrl | None = None
    is_active: bool = True
    sort_order: int = Field(default=0, ge=-1_000_000, le=1_000_000)


class StyleUpdateIn(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    prompt: str | None = Field(default=None, min_length=1, max_length=2000)
    thumbnail_url: ThumbnailUrl | None = None
    is_active: bool | None = None
    sort_order: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)

    @model_validator(mode="after")
    def _required_fields_are_not_null(self) -> StyleUpdateIn:
        for name in ("name", "prompt", "is_active", "sort_order"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

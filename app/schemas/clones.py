from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from app.schemas.base import Schema


class PhotoOut(Schema):
    id: uuid.UUID
    url: str
    content_type: str
    width: int
    height: int
    size: int
    created_at: datetime


class PhotosOut(Schema):
    items: list[PhotoOut]


class PhotoPageOut(Schema):
    items: list[PhotoOut]
    next_cursor: str | None


class EnhanceIn(Schema):
    prompt: str = Field(min_length=1, max_length=2000, examples=["me as an astronaut on the moon"])
    style: str | None = Field(default=None, max_length=100, examples=["cinematic"])


class EnhancedOut(Schema):
    original: str
    enhanced: str


class QuotaOut(Schema):
    name: str
    period: str
    used: int
    total: int | None
    remaining: int | None
    resets_at: datetime | None


class QuotasOut(Schema):
    plan: str
    quotas: list[QuotaOut]

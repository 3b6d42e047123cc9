from __future__ import annotations

import uuid
from datetime import datetime

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

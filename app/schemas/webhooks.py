from __future__ import annotations

from typing import Literal

from app.schemas.base import Schema


class WebhookAck(Schema):
    status: Literal["processed", "duplicate", "ignored"]

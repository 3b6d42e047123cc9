from __future__ import annotations

from typing import Literal

from app.schemas.base import Schema


class HealthStatus(Schema):
    status: Literal["ok"]


class ReadinessStatus(Schema):
    status: Literal["ok"]
    checks: dict[str, str]

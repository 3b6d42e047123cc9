"""Kept for app/routers/billing.py until it takes `IdempotentDep` (app/dependencies.py) like the other
routes; delete this module then."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.dependencies import respond_once
from app.models import User
from app.schemas.base import Schema


async def idempotent_response(
    request: Request,
    session: AsyncSession,
    user: User,
    ttl_seconds: int,
    status_code: int,
    produce: Callable[[], Awaitable[Schema]],
    fields: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """`produce`'s answer, at most once per Idempotency-Key (see `app.dependencies.Idempotent.respond`)."""
    return await respond_once(request, session, user, ttl_seconds, status_code, produce, fields)

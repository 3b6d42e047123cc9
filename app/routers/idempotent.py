"""Replaying POSTs sent with an Idempotency-Key (see services/idempotency)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import User
from app.schemas.base import Schema
from app.services import idempotency


async def idempotent_response(
    request: Request,
    session: AsyncSession,
    user: User,
    ttl_seconds: int,
    status_code: int,
    produce: Callable[[], Awaitable[Schema]],
) -> JSONResponse:
    key = request.headers.get("idempotency-key")
    if key is None:
        return JSONResponse((await produce()).model_dump(mode="json"), status_code=status_code)
    fingerprint = idempotency.fingerprint(request.method, request.url.path, await request.body())
    claimed = await idempotency.begin(session, user, key, fingerprint, ttl_seconds)
    if isinstance(claimed, idempotency.Replay):
        return JSONResponse(
            claimed.body, status_code=claimed.status_code, headers={"Idempotent-Replayed": "true"}
        )
    body = (await produce()).model_dump(mode="json")
    await idempotency.complete(claimed, status_code, body, session)
    return JSONResponse(body, status_code=status_code)

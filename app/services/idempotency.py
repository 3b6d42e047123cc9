"""Idempotency-Key for POSTs that create payments or spend credits: a retry with the same key and body
gets the first response back and creates nothing; the same key with another body is a 409."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.errors import BadRequest, Conflict
from app.models import IdempotencyRecord, User
from app.repositories.billing import IdempotencyRepository


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was already used with a different request."


class InvalidIdempotencyKey(BadRequest):
    code = "invalid_idempotency_key"
    default_detail = "Idempotency-Key must be 1 to 255 printable characters."


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: Any


def fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


async def begin(
    session: AsyncSession, user: User, key: str, request_fingerprint: str, ttl_seconds: int
) -> IdempotencyRecord | Replay:
    """Claim the key for this request, or return the response already stored under it.

    The claim is an insert on a unique (user, key): a concurrent request with the same key waits for the
    first one's transaction, then finds its stored response."""
    if not key or len(key) > 255 or not key.isprintable():
        raise InvalidIdempotencyKey()
    repository = IdempotencyRepository(session)
    now = utcnow()
    existing = await repository.find(user.id, key)
    if existing is not None and existing.expires_at <= now:
        await session.delete(existing)
        await session.flush()
        existing = None
    if existing is None:
        claimed = await repository.claim(
            {
                "user_id": user.id,
                "key": key,
                "request_fingerprint": request_fingerprint,
                "expires_at": now + timedelta(seconds=ttl_seconds),
            }
        )
        existing = await repository.find(user.id, key)
        assert existing is not None
        if claimed:
            return existing
    if existing.request_fingerprint != request_fingerprint:
        raise IdempotencyKeyReused()
    if existing.status_code is None:
        raise Conflict("A request with this Idempotency-Key is still in progress; retry shortly.")
    return Replay(existing.status_code, existing.response_body)


async def complete(record: IdempotencyRecord, status_code: int, body: Any, session: AsyncSession) -> None:
    record.status_code = status_code
    record.response_body = body
    await session.flush()

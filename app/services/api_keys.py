from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.errors import NotFound
from app.models import ApiKey, AuditAction, User
from app.repositories.auth_tokens import ApiKeyRepository
from app.security import sha256_hex
from app.services import audit
from app.services.auth import API_KEY_PREFIX


@dataclass(frozen=True)
class CreatedApiKey:
    key: ApiKey
    secret: str  # shown once, never stored


async def create(session: AsyncSession, user: User, name: str) -> CreatedApiKey:
    # The prefix names the key in listings and logs; the 256-bit secret is what authenticates, so a fast
    # hash is enough (there is nothing to brute-force, unlike a password).
    prefix = secrets.token_hex(6)
    secret = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = await ApiKeyRepository(session).add(
        ApiKey(user_id=user.id, name=name, prefix=prefix, secret_hash=sha256_hex(secret))
    )
    await audit.record(
        session,
        action=AuditAction.api_key_created,
        actor_id=user.id,
        subject_id=user.id,
        details={"key_id": key.id, "name": name},
    )
    return CreatedApiKey(key, secret)


async def list_keys(session: AsyncSession, user: User) -> list[ApiKey]:
    return await ApiKeyRepository(session).list_for_user(user.id)


async def revoke(session: AsyncSession, user: User, key_id: uuid.UUID) -> None:
    key = await ApiKeyRepository(session).get_for_user(key_id, user.id)
    if key is None:
        raise NotFound("No such API key.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await audit.record(
            session,
            action=AuditAction.api_key_revoked,
            actor_id=user.id,
            subject_id=user.id,
            details={"key_id": key.id},
        )
    await session.flush()

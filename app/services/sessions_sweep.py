from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.repositories.auth_tokens import (
    EmailCodeRepository,
    OneTimeTokenRepository,
    RefreshTokenRepository,
    RevokedAccessTokenRepository,
)
from app.repositories.billing import IdempotencyRepository


async def sweep_expired(session: AsyncSession) -> dict[str, int]:
    """Rows past their expiry protect nothing any more: an expired token fails on its own `exp`, an
    expired idempotency key may be reused."""
    now = utcnow()
    return {
        "revoked_access_tokens": await RevokedAccessTokenRepository(session).delete_expired(now),
        "refresh_tokens": await RefreshTokenRepository(session).delete_expired(now),
        "one_time_tokens": await OneTimeTokenRepository(session).delete_expired(now),
        "email_codes": await EmailCodeRepository(session).delete_expired(now),
        "idempotency_keys": await IdempotencyRepository(session).delete_expired(now),
    }

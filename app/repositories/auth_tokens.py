from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult

from app.db.upsert import insert_if_absent
from app.models import (
    ApiKey,
    EmailCode,
    EmailCodePurpose,
    OneTimeToken,
    RefreshToken,
    RevokedAccessToken,
    User,
)
from app.repositories.base import Repository


def _changed(result: Any) -> int:
    cursor: CursorResult[Any] = result
    return cursor.rowcount


class RefreshTokenRepository(Repository[RefreshToken]):
    model = RefreshToken

    async def mark_used(self, token_id: uuid.UUID, now: datetime) -> bool:
        """Atomically claim a live token; False when it was already used, revoked or expired, so two
        concurrent refreshes with one token cannot both succeed."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == token_id,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > now,
            )
            .values(used_at=now)
        )
        return _changed(result) == 1

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> int:
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return _changed(result)

    async def revoke_all_for_user(self, user_id: uuid.UUID, now: datetime) -> int:
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return _changed(result)

    async def delete_expired(self, now: datetime) -> int:
        return _changed(
            await self.session.execute(delete(RefreshToken).where(RefreshToken.expires_at <= now))
        )


class RevokedAccessTokenRepository(Repository[RevokedAccessToken]):
    model = RevokedAccessToken

    async def revoke(self, jti: str, expires_at: datetime) -> None:
        await insert_if_absent(self.session, RevokedAccessToken, {"jti": jti, "expires_at": expires_at})

    async def delete_expired(self, now: datetime) -> int:
        return _changed(
            await self.session.execute(delete(RevokedAccessToken).where(RevokedAccessToken.expires_at <= now))
        )


class OneTimeTokenRepository(Repository[OneTimeToken]):
    model = OneTimeToken

    async def consume(self, token_hash: str, purpose: str, now: datetime) -> uuid.UUID | None:
        """Spend a live token once; the user it belongs to, or None if unknown, expired or spent."""
        token = await self.session.scalar(
            select(OneTimeToken).where(OneTimeToken.token_hash == token_hash, OneTimeToken.purpose == purpose)
        )
        if token is None:
            return None
        result = await self.session.execute(
            update(OneTimeToken)
            .where(OneTimeToken.id == token.id, OneTimeToken.used_at.is_(None), OneTimeToken.expires_at > now)
            .values(used_at=now)
        )
        return token.user_id if _changed(result) == 1 else None

    async def peek(self, token_hash: str, purpose: str, now: datetime) -> uuid.UUID | None:
        """The user a live token belongs to, without spending it."""
        return await self.session.scalar(
            select(OneTimeToken.user_id).where(
                OneTimeToken.token_hash == token_hash,
                OneTimeToken.purpose == purpose,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.expires_at > now,
            )
        )

    async def expire_unused(self, user_id: uuid.UUID, purpose: str, now: datetime) -> None:
        """Older links stop working when a new one is sent or the account changes."""
        await self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.user_id == user_id,
                OneTimeToken.purpose == purpose,
                OneTimeToken.used_at.is_(None),
            )
            .values(used_at=now)
        )

    async def delete_for_user(self, user_id: uuid.UUID) -> None:
        await self.session.execute(delete(OneTimeToken).where(OneTimeToken.user_id == user_id))

    async def delete_expired(self, now: datetime) -> int:
        return _changed(
            await self.session.execute(delete(OneTimeToken).where(OneTimeToken.expires_at <= now))
        )


class EmailCodeRepository(Repository[EmailCode]):
    model = EmailCode

    async def get_live(self, token_hash: str, now: datetime, max_attempts: int) -> EmailCode | None:
        """The challenge this token names while a code may still be tried: unspent, unexpired, and with
        attempts left."""
        return await self.session.scalar(
            select(EmailCode).where(
                EmailCode.token_hash == token_hash,
                EmailCode.used_at.is_(None),
                EmailCode.expires_at > now,
                EmailCode.attempts < max_attempts,
            )
        )

    async def count_attempt(self, code_id: uuid.UUID, now: datetime, max_attempts: int) -> bool:
        """Atomically take one attempt from a live challenge; False when none is left (or it was spent
        meanwhile), so concurrent guesses can never exceed the limit."""
        result = await self.session.execute(
            update(EmailCode)
            .where(
                EmailCode.id == code_id,
                EmailCode.used_at.is_(None),
                EmailCode.expires_at > now,
                EmailCode.attempts < max_attempts,
            )
            .values(attempts=EmailCode.attempts + 1)
        )
        return _changed(result) == 1

    async def spend(self, code_id: uuid.UUID, now: datetime) -> bool:
        """Mark the challenge used; False when a concurrent request spent it first."""
        result = await self.session.execute(
            update(EmailCode).where(EmailCode.id == code_id, EmailCode.used_at.is_(None)).values(used_at=now)
        )
        return _changed(result) == 1

    async def get_by_token(self, token_hash: str) -> EmailCode | None:
        """The challenge this token names, in whatever state."""
        return await self.session.scalar(select(EmailCode).where(EmailCode.token_hash == token_hash))

    async def has_pending_signup(self, email: str, now: datetime) -> bool:
        """Whether a real (not decoy) sign-up code for this address is out, unspent and unexpired."""
        found = await self.session.scalar(
            select(EmailCode.id)
            .where(
                EmailCode.email == email,
                EmailCode.purpose == EmailCodePurpose.signup.value,
                EmailCode.used_at.is_(None),
                EmailCode.expires_at > now,
                EmailCode.code_hash != "",  # a decoy's, which no code matches
            )
            .limit(1)
        )
        return found is not None

    async def expire_unused(self, email: str, purpose: str, now: datetime) -> None:
        """Only the newest code for an address and purpose works."""
        await self.session.execute(
            update(EmailCode)
            .where(EmailCode.email == email, EmailCode.purpose == purpose, EmailCode.used_at.is_(None))
            .values(used_at=now)
        )

    async def delete_for_user(self, user_id: uuid.UUID, email: str | None) -> None:
        condition = EmailCode.user_id == user_id
        if email is not None:
            condition = condition | (EmailCode.email == email)
        await self.session.execute(delete(EmailCode).where(condition))

    async def delete_expired(self, now: datetime) -> int:
        return _changed(await self.session.execute(delete(EmailCode).where(EmailCode.expires_at <= now)))


class ApiKeyRepository(Repository[ApiKey]):
    model = ApiKey

    async def get_with_owner(self, prefix: str) -> tuple[ApiKey, User] | None:
        """The key and its owner in one round trip: every request with an API key needs both."""
        row = (
            await self.session.execute(
                select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.prefix == prefix)
            )
        ).first()
        return (row[0], row[1]) if row is not None else None

    async def list_for_user(self, user_id: uuid.UUID) -> list[ApiKey]:
        result = await self.session.scalars(
            select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc(), ApiKey.id)
        )
        return list(result)

    async def get_for_user(self, key_id: uuid.UUID, user_id: uuid.UUID) -> ApiKey | None:
        return await self.session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id))

    async def touch(self, key_id: uuid.UUID, now: datetime) -> None:
        await self.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))

    async def delete_for_user(self, user_id: uuid.UUID) -> None:
        await self.session.execute(delete(ApiKey).where(ApiKey.user_id == user_id))

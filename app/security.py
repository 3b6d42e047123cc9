"""Password hashing and the local access/refresh JWTs."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from jose import JWTError, jwt
from passlib.context import CryptContext

from app.config import Settings
from app.db.base import utcnow

TokenType = Literal["access", "refresh"]
LOCAL_ISSUER = "pixforge"
LOCAL_AUDIENCE = "pixforge-api"


class PasswordHasher:
    """Argon2id for new hashes; bcrypt hashes (imported accounts) still verify and are upgraded on the
    next successful login. Hashing is CPU-bound, so it runs in a worker thread."""

    def __init__(self, memory_kib: int, time_cost: int) -> None:
        self._context = CryptContext(
            schemes=["argon2", "bcrypt"],
            deprecated=["bcrypt"],
            argon2__type="ID",
            argon2__memory_cost=memory_kib,
            argon2__time_cost=time_cost,
        )
        # Verified when the account does not exist, so "no such email" costs as much as "wrong password".
        self._decoy_hash = self._context.hash(secrets.token_urlsafe(16))

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordHasher:
        return cls(settings.password_hash_memory_kib, settings.password_hash_time_cost)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._context.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        """(matches, replacement hash when the stored one uses an outdated scheme or cost)."""
        if password_hash is None:
            await asyncio.to_thread(self._context.verify, password, self._decoy_hash)
            return False, None
        try:
            return await asyncio.to_thread(self._context.verify_and_update, password, password_hash)
        except ValueError:  # an unrecognised or corrupt stored hash
            return False, None


@dataclass(frozen=True)
class LocalTokenClaims:
    user_id: uuid.UUID
    jti: str
    token_type: TokenType
    issued_at_ms: int  # unix milliseconds: orders a token against a revocation in the same second
    expires_at: datetime
    family_id: uuid.UUID | None = None


class InvalidLocalToken(Exception):
    """The token is not a valid local token of the expected type (reason kept for logs only)."""


class LocalTokenCodec:
    """HS256 tokens issued by this server. `typ` separates access from refresh tokens, so neither can
    stand in for the other."""

    def __init__(self, secret: str, access_ttl_seconds: int, refresh_ttl_seconds: int) -> None:
        self._secret = secret
        self.access_ttl = timedelta(seconds=access_ttl_seconds)
        self.refresh_ttl = timedelta(seconds=refresh_ttl_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalTokenCodec:
        return cls(
            settings.secret_key.get_secret_value(),
            settings.access_token_ttl_seconds,
            settings.refresh_token_ttl_seconds,
        )

    def issue(
        self, user_id: uuid.UUID, token_type: TokenType, family_id: uuid.UUID | None = None
    ) -> tuple[str, LocalTokenClaims]:
        now = utcnow()
        claims = LocalTokenClaims(
            user_id=user_id,
            jti=uuid.uuid4().hex,
            token_type=token_type,
            issued_at_ms=int(now.timestamp() * 1000),
            expires_at=now + (self.access_ttl if token_type == "access" else self.refresh_ttl),
            family_id=family_id,
        )
        payload: dict[str, Any] = {
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
            "sub": str(user_id),
            "jti": claims.jti,
            "typ": token_type,
            "iat": claims.issued_at_ms // 1000,
            "nbf": claims.issued_at_ms // 1000,
            "iat_ms": claims.issued_at_ms,
            "exp": int(claims.expires_at.timestamp()),
        }
        if family_id is not None:
            payload["fam"] = str(family_id)
        return jwt.encode(payload, self._secret, algorithm="HS256"), claims

    def decode(self, token: str, expected_type: TokenType) -> LocalTokenClaims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=LOCAL_AUDIENCE,
                issuer=LOCAL_ISSUER,
                options={"require_exp": True, "require_sub": True, "require_jti": True, "require_iat": True},
            )
        except JWTError as exc:
            raise InvalidLocalToken(str(exc)) from exc
        if payload.get("typ") != expected_type:
            raise InvalidLocalToken(f"expected a {expected_type} token")
        try:
            return LocalTokenClaims(
                user_id=uuid.UUID(payload["sub"]),
                jti=str(payload["jti"]),
                token_type=expected_type,
                issued_at_ms=int(payload["iat_ms"]),
                expires_at=datetime.fromtimestamp(int(payload["exp"]), tz=utcnow().tzinfo),
                family_id=uuid.UUID(payload["fam"]) if "fam" in payload else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidLocalToken("malformed claims") from exc


def unverified_issuer(token: str) -> str | None:
    """Which issuer a bearer token claims, to pick the verifier; nothing is trusted from it."""
    try:
        issuer = jwt.get_unverified_claims(token).get("iss")
    except JWTError:
        return None
    return issuer if isinstance(issuer, str) else None


def new_secret_token() -> str:
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()

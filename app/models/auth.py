"""Tables behind sessions and one-time links: refresh tokens, revoked access tokens, single-use tokens,
API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDPrimaryKeyMixin, utcnow


class RefreshToken(Base):
    """One issued refresh token (its id is the JWT's jti). Tokens rotated from one login share a family,
    so a replayed (already used) token can revoke every descendant at once."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class RevokedAccessToken(Base):
    """Access tokens logged out before they expire. Rows past `expires_at` are useless and swept."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class OneTimeTokenPurpose(StrEnum):
    verify_email = "verify_email"
    reset_password = "reset_password"


class OneTimeToken(UUIDPrimaryKeyMixin, Base):
    """A single-use secret sent by email. Only its SHA-256 is stored."""

    __tablename__ = "one_time_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class EmailCodePurpose(StrEnum):
    login = "login"
    signup = "signup"


class EmailCode(UUIDPrimaryKeyMixin, Base):
    """A sign-in or sign-up challenge: an opaque token the client holds (only its SHA-256 is stored) and a
    6-digit code sent to `email` (only its HMAC under the server's secret is stored, so a leaked table
    cannot be brute-forced offline). `code_hash` is empty for a decoy: a challenge answered for an
    address that gets no code, which no code ever matches.

    `user_id` is the account it signs into; none for a sign-up whose account is created when the code is
    verified (with `name` and `password_hash` kept here until then). `attempts` counts wrong codes: at
    `LOGIN_CODE_MAX_ATTEMPTS` the challenge is dead. `used_at` marks it spent (or superseded)."""

    __tablename__ = "email_codes"

    purpose: Mapped[str] = mapped_column(String(16))
    email: Mapped[str] = mapped_column(String(320), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class ApiKey(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """A server-to-server credential `pk_<prefix>_<secret>`: the prefix identifies it, only a hash of the
    whole key is stored."""

    __tablename__ = "api_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDPrimaryKeyMixin


class UserRole(StrEnum):
    user = "user"
    admin = "admin"


class User(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """One person, however they sign in (password, Google, Clerk or an API key)."""

    __tablename__ = "users"
    # New users per period (analytics, the users report).
    __table_args__ = (Index("ix_users_created_at", "created_at"),)

    # Stored normalized (trimmed, lower-case) so uniqueness is case-insensitive on every backend.
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    photo_url: Mapped[str | None] = mapped_column(String(2048))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    email_verified_at: Mapped[datetime | None]
    clerk_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    google_sub: Mapped[str | None] = mapped_column(String(64), unique=True)
    plan: Mapped[str] = mapped_column(String(32), default="free")
    role: Mapped[str] = mapped_column(String(16), default=UserRole.user.value)
    is_active: Mapped[bool] = mapped_column(default=True)
    last_login_at: Mapped[datetime | None]
    # Tokens issued at or before this second are refused: a password reset or erasure ends every session.
    sessions_revoked_at: Mapped[datetime | None]
    # Clerk's `updated_at` (ms) of the data we hold, so an older webhook never overwrites a newer one.
    clerk_updated_at: Mapped[int | None] = mapped_column(BigInteger)
    # Set when the account is erased: the row stays (ledger and payments point at it) with no personal data.
    erased_at: Mapped[datetime | None]

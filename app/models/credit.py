from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UUIDPrimaryKeyMixin, utcnow

MILLICREDITS_PER_CREDIT = 1000


class LedgerReason(StrEnum):
    signup_bonus = "signup_bonus"
    purchase = "purchase"
    subscription = "subscription"
    job_reserve = "job_reserve"
    job_capture = "job_capture"
    job_release = "job_release"
    refund = "refund"
    chargeback = "chargeback"
    admin_adjustment = "admin_adjustment"


class CreditAccount(UUIDPrimaryKeyMixin, Base):
    """A user's spendable balance in millicredits (1 credit = 1000). The balance is a cache of the sum
    of the account's ledger rows, kept equal by moving both in one transaction."""

    __tablename__ = "credit_accounts"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), unique=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # Millicredits held by running jobs: already out of `balance`, not yet captured or released.
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CreditLedgerEntry(UUIDPrimaryKeyMixin, Base):
    """Append-only: one row per movement, signed (grants positive, spending negative)."""

    __tablename__ = "credit_ledger"
    __table_args__ = (
        # The statement listing newest first walks this index.
        Index("ix_credit_ledger_account_id_created_at", "account_id", "created_at"),
        # Analytics sum a period's movements by reason from this index alone (an index-only scan).
        Index("ix_credit_ledger_created_at_reason_amount", "created_at", "reason", "amount"),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("credit_accounts.id", ondelete="RESTRICT"))
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    # What the caller asked for, where the movement may take less (a refund stops at a zero balance).
    requested_amount: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class SignupBonusClaim(Base):
    """An identity (an email address, a Google subject, a Clerk user) that has had its signup bonus,
    as a keyed hash: it outlives the account's erasure so that deleting and signing up again does not
    mint a second bonus, yet names no one without the server's secret."""

    __tablename__ = "signup_bonus_claims"

    identity_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    # No foreign key on purpose: the claim must outlive its account, however that account goes.
    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

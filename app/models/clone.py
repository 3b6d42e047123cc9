"""AI clones: the photos a user uploads of themselves, and the personal models (LoRAs) trained on them."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDPrimaryKeyMixin, utcnow


class ClonePhoto(UUIDPrimaryKeyMixin, Base):
    """One photo of a user's set: a validated upload (origin `job_input`, so not listed in the gallery)."""

    __tablename__ = "clone_photos"
    __table_args__ = (Index("ix_clone_photos_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    upload_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CloneModelStatus(StrEnum):
    training = "training"
    ready = "ready"
    failed = "failed"
    canceled = "canceled"


class CloneModel(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """A personal model trained on some of the user's photos under a trigger word."""

    __tablename__ = "clone_models"
    __table_args__ = (
        UniqueConstraint("user_id", "trigger_word", name="uq_clone_models_user_id_trigger_word"),
        Index("ix_clone_models_user_id_created_at", "user_id", "created_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    trigger_word: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(16), default=CloneModelStatus.training.value)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    provider_training_id: Mapped[str | None] = mapped_column(String(255), index=True)
    provider_model: Mapped[str | None] = mapped_column(String(255))
    provider_version: Mapped[str | None] = mapped_column(String(255))
    error_message: Mapped[str | None] = mapped_column(Text)
    logs_url: Mapped[str | None] = mapped_column(String(2048))
    # Millicredits held for the training (ledger key `clone_model:<id>:reserve`): captured when it
    # succeeds, released when it fails or is cancelled.
    credits_reserved: Mapped[int] = mapped_column(default=0)
    # When its training ended (ready, failed or cancelled).
    finished_at: Mapped[datetime | None]
    # Deleted by its owner: hidden from every listing, but still counted by the plan's "models ever".
    deleted_at: Mapped[datetime | None]


class CloneModelPhoto(Base):
    """Which photos a model was (or is being) trained on."""

    __tablename__ = "clone_model_photos"

    model_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clone_models.id", ondelete="CASCADE"), primary_key=True
    )
    photo_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clone_photos.id", ondelete="CASCADE"), primary_key=True, index=True
    )

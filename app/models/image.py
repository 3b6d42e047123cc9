"""Uploaded images and the AI jobs made from them (background removal, vectorization, generation)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDPrimaryKeyMixin, utcnow


class JobKind(StrEnum):
    remove_background = "remove_background"
    vectorize = "vectorize"
    # The hairstyle try-on (the seed app's POST /image/generate).
    generate = "generate"
    # Text to image from a prompt, with a personal model or the default one (POST /generations).
    generation = "generation"


class JobStatus(StrEnum):
    pending = "PENDING"
    processing = "PROCESSING"
    completed = "COMPLETED"
    failed = "FAILED"


TERMINAL_STATUSES = frozenset({JobStatus.completed.value, JobStatus.failed.value})


class UploadOrigin(StrEnum):
    # Sent to POST /uploads: the user's own image, listed in the gallery.
    direct = "direct"
    # Sent inline with a job: shown as that job's input, not as an image of its own.
    job_input = "job_input"


class Upload(UUIDPrimaryKeyMixin, Base):
    """A validated image: type decided from its bytes, orientation applied, metadata stripped."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    storage_key: Mapped[str] = mapped_column(String(512), unique=True)
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int]
    height: Mapped[int]
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(16), default=UploadOrigin.direct.value)
    is_favourite: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Job(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """One piece of AI work. Credits are reserved when it is created and captured only when it
    completes; a failed or abandoned job releases them."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_user_id_created_at", "user_id", "created_at"),
        Index("ix_jobs_status_lease_until", "status", "lease_until"),
        # Analytics count a period's jobs by kind and status, and the usage report lists them.
        Index("ix_jobs_created_at_kind_status", "created_at", "kind", "status"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.pending.value)
    input_upload_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("uploads.id", ondelete="SET NULL"))
    # Side views made later from this job's parent's front output (a child job, charged like any view);
    # the gallery nests children under their parent. A deleted parent leaves them standing on their own.
    parent_job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    input_key: Mapped[str | None] = mapped_column(String(512))
    # [{"key", "content_type", "view"?}] once completed.
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    credits_reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    reservation_key: Mapped[str | None] = mapped_column(String(255))
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_job_id: Mapped[str | None] = mapped_column(String(255), index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    time_taken_ms: Mapped[int | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # While PROCESSING: past this moment the worker is presumed dead and the job is recovered.
    lease_until: Mapped[datetime | None]
    is_favourite: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str | None] = mapped_column(String(500))


class Style(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """A hairstyle the try-on can apply: the prompt is what the model is asked for."""

    __tablename__ = "styles"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(String(500))
    prompt: Mapped[str] = mapped_column(Text)
    thumbnail_url: Mapped[str | None] = mapped_column(String(2048))
    # A tab of the catalogue ("standard", "celebrity"): free slugs an admin chooses, no table of them.
    category: Mapped[str] = mapped_column(String(32), default="standard")
    is_active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)

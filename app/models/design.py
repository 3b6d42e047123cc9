"""Design systems (colours, type, spacing; private or shared in the showcase) and the usage records of
every credit-spending action."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDPrimaryKeyMixin, utcnow


class UsageAction(StrEnum):
    """What a credit was spent on; one usage record per spend."""

    palette = "palette"
    design_system_colors = "design_system_colors"
    design_system_full = "design_system_full"
    remove_background = "remove_background"
    vectorize_preview = "vectorize_preview"
    vectorize_full = "vectorize_full"
    generate = "generate"
    generation = "generation"
    clone_training = "clone_training"


class DesignSource(StrEnum):
    manual = "manual"
    color = "color"
    image = "image"
    prompt = "prompt"


class DesignSystem(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """A saved design system. Its tokens are JSON documents whose shapes app/schemas/design.py fixes;
    `version` grows by one on every edit of its content."""

    __tablename__ = "design_systems"
    __table_args__ = (
        Index("ix_design_systems_user_id_created_at", "user_id", "created_at"),
        # The showcase: public ones, featured first, most recently shared next.
        Index("ix_design_systems_showcase", "is_public", "featured", "shared_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default=DesignSource.manual.value)
    colors: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    typography: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    spacing: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    radii: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    shadows: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(default=1)
    is_public: Mapped[bool] = mapped_column(default=False)
    featured: Mapped[bool] = mapped_column(default=False)
    shared_at: Mapped[datetime | None]


class DesignSystemTag(Base):
    """One tag of a design system, normalised (lower case): a row per tag, so a search by tag is a plain
    indexed equality on every database."""

    __tablename__ = "design_system_tags"
    __table_args__ = (Index("ix_design_system_tags_tag", "tag"),)

    design_system_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("design_systems.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(32), primary_key=True)


class UsageRecord(UUIDPrimaryKeyMixin, Base):
    """One credit-spending action: written in the transaction of its spend (`credits` in millicredits,
    0 for a failed attempt that cost nothing)."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    credits: Mapped[int] = mapped_column(BigInteger, default=0)
    object_id: Mapped[uuid.UUID | None]
    success: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

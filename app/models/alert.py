from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class AlertState(Base):
    """When an alert of each kind was last sent, shared by every process: the claim of a kind for its
    window is one conditional UPDATE of this row, so two processes (or two rounds) never both send it."""

    __tablename__ = "alert_states"

    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_sent_at: Mapped[datetime | None]

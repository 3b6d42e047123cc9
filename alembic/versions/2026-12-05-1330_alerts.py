"""alerts: when each kind of operator alert was last sent, shared by every process

Revision ID: 0019_alerts
Revises: 0018_bonus_claims
Create Date: 2026-12-05 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0019_alerts"
down_revision: str | None = "0018_bonus_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_states",
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("last_sent_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_alert_states")),
    )


def downgrade() -> None:
    op.drop_table("alert_states")

"""webhook events get a status; styles get a category

Revision ID: 0014_operators
Revises: 0013_email_codes
Create Date: 2026-12-05 09:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0014_operators"
down_revision: str | None = "0013_email_codes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="received")
        )
    # Events stored before the status existed: handled ones count as processed (an ignored one cannot be
    # told apart any more), unhandled ones with an error as failed.
    events = sa.table(
        "webhook_events",
        sa.column("status", sa.String()),
        sa.column("handled_at", sa.DateTime()),
        sa.column("error", sa.Text()),
    )
    op.execute(events.update().where(events.c.handled_at.is_not(None)).values(status="processed"))
    op.execute(
        events.update()
        .where(events.c.handled_at.is_(None), events.c.error.is_not(None))
        .values(status="failed")
    )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.alter_column(
            "status", server_default=None, existing_type=sa.String(length=16), existing_nullable=False
        )
        batch_op.create_index("ix_webhook_events_status_received_at", ["status", "received_at"], unique=False)

    with op.batch_alter_table("styles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("category", sa.String(length=32), nullable=False, server_default="standard")
        )
    with op.batch_alter_table("styles", schema=None) as batch_op:
        batch_op.alter_column(
            "category", server_default=None, existing_type=sa.String(length=32), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("styles", schema=None) as batch_op:
        batch_op.drop_column("category")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_status_received_at")
        batch_op.drop_column("status")

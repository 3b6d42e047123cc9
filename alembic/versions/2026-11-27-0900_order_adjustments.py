"""order adjustments: the refunds and disputes of each order, kept until its payment lands

Revision ID: 0008_order_adjustments
Revises: 0007_idempotency_digests
Create Date: 2026-11-27 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0008_order_adjustments"
down_revision: str | None = "0007_idempotency_digests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_adjustments",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payment_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("applied_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_order_adjustments_order_id_orders"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_adjustments")),
        sa.UniqueConstraint("key", name=op.f("uq_order_adjustments_key")),
    )
    with op.batch_alter_table("order_adjustments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_adjustments_order_id"), ["order_id"], unique=False)


def downgrade() -> None:
    # Its indexes go with it (MariaDB refuses to drop the order_id index alone: the foreign key needs it).
    op.drop_table("order_adjustments")

"""analytics and reports: indexes for a period's ledger rows, orders, jobs and new users

Revision ID: 0016_analytics_indexes
Revises: 0015_clone_trainings
Create Date: 2026-12-05 09:15:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016_analytics_indexes"
down_revision: str | None = "0015_clone_trainings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.create_index(
            "ix_credit_ledger_created_at_reason_amount", ["created_at", "reason", "amount"], unique=False
        )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_created_at_status", ["created_at", "status"], unique=False)
        batch_op.create_index("ix_orders_paid_at", ["paid_at"], unique=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_created_at_kind_status", ["created_at", "kind", "status"], unique=False
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index("ix_users_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_created_at")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_created_at_kind_status")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_paid_at")
        batch_op.drop_index("ix_orders_created_at_status")
    with op.batch_alter_table("credit_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_ledger_created_at_reason_amount")

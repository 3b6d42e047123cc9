"""clone trainings: the credits a training holds, when it ended, and soft deletion

Revision ID: 0015_clone_trainings
Revises: 0014_operators
Create Date: 2026-12-05 09:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0015_clone_trainings"
down_revision: str | None = "0014_operators"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows get 0 through a server default that is dropped again: the application sets it.
    with op.batch_alter_table("clone_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credits_reserved", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("finished_at", app.db.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", app.db.base.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("clone_models", schema=None) as batch_op:
        batch_op.alter_column(
            "credits_reserved", existing_type=sa.Integer(), existing_nullable=False, server_default=None
        )


def downgrade() -> None:
    with op.batch_alter_table("clone_models", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("finished_at")
        batch_op.drop_column("credits_reserved")

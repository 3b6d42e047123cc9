"""uploads in the gallery: origin, favourite, description

Revision ID: 0006_upload_gallery
Revises: 0005_styles
Create Date: 2026-11-26 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006_upload_gallery"
down_revision: str | None = "0005_styles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows get a value through a server default that is dropped again: the application sets
    # these columns itself, as the models say.
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("origin", sa.String(length=16), nullable=False, server_default="direct"))
        batch.add_column(sa.Column("is_favourite", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("description", sa.String(length=500), nullable=True))
    # Rows from before cannot tell an inline upload from a direct one: all are listed (hiding a user's
    # own image would be worse than showing a job's input twice).
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column(
            "origin", existing_type=sa.String(length=16), existing_nullable=False, server_default=None
        )
        batch.alter_column(
            "is_favourite", existing_type=sa.Boolean(), existing_nullable=False, server_default=None
        )


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("description")
        batch.drop_column("is_favourite")
        batch.drop_column("origin")

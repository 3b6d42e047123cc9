"""design systems, their tags, and the usage records of credit-spending actions

Revision ID: 0009_design_systems
Revises: 0008_order_adjustments
Create Date: 2026-12-04 17:34:35.014743
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0009_design_systems"
down_revision: str | None = "0008_order_adjustments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "design_systems",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("colors", sa.JSON(), nullable=False),
        sa.Column("typography", sa.JSON(), nullable=False),
        sa.Column("spacing", sa.JSON(), nullable=False),
        sa.Column("radii", sa.JSON(), nullable=False),
        sa.Column("shadows", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("featured", sa.Boolean(), nullable=False),
        sa.Column("shared_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_design_systems_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_design_systems")),
    )
    with op.batch_alter_table("design_systems", schema=None) as batch_op:
        batch_op.create_index(
            "ix_design_systems_showcase", ["is_public", "featured", "shared_at"], unique=False
        )
        batch_op.create_index("ix_design_systems_user_id_created_at", ["user_id", "created_at"], unique=False)

    op.create_table(
        "usage_records",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("object_id", sa.Uuid(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_usage_records_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index("ix_usage_records_user_id_created_at", ["user_id", "created_at"], unique=False)

    op.create_table(
        "design_system_tags",
        sa.Column("design_system_id", sa.Uuid(), nullable=False),
        sa.Column("tag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["design_system_id"],
            ["design_systems.id"],
            name=op.f("fk_design_system_tags_design_system_id_design_systems"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("design_system_id", "tag", name=op.f("pk_design_system_tags")),
    )
    with op.batch_alter_table("design_system_tags", schema=None) as batch_op:
        batch_op.create_index("ix_design_system_tags_tag", ["tag"], unique=False)


def downgrade() -> None:
    # Indexes go with their tables (MariaDB refuses to drop an index a foreign key needs).
    op.drop_table("design_system_tags")
    op.drop_table("usage_records")
    op.drop_table("design_systems")

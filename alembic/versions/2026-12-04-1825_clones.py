"""clone photos, clone models and their photos

Revision ID: 0011_clones
Revises: 0010_audit_logs
Create Date: 2026-12-04 18:25:02.951525
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0011_clones"
down_revision: str | None = "0010_audit_logs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clone_photos",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("upload_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["upload_id"], ["uploads.id"], name=op.f("fk_clone_photos_upload_id_uploads"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_clone_photos_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clone_photos")),
        sa.UniqueConstraint("upload_id", name=op.f("uq_clone_photos_upload_id")),
    )
    with op.batch_alter_table("clone_photos", schema=None) as batch_op:
        batch_op.create_index("ix_clone_photos_user_id_created_at", ["user_id", "created_at"], unique=False)

    op.create_table(
        "clone_models",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("trigger_word", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("provider_training_id", sa.String(length=255), nullable=True),
        sa.Column("provider_model", sa.String(length=255), nullable=True),
        sa.Column("provider_version", sa.String(length=255), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("logs_url", sa.String(length=2048), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_clone_models_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_clone_models_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clone_models")),
        sa.UniqueConstraint("user_id", "trigger_word", name="uq_clone_models_user_id_trigger_word"),
    )
    with op.batch_alter_table("clone_models", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clone_models_provider_training_id"), ["provider_training_id"], unique=False
        )
        batch_op.create_index("ix_clone_models_user_id_created_at", ["user_id", "created_at"], unique=False)

    op.create_table(
        "clone_model_photos",
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("photo_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["clone_models.id"],
            name=op.f("fk_clone_model_photos_model_id_clone_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["photo_id"],
            ["clone_photos.id"],
            name=op.f("fk_clone_model_photos_photo_id_clone_photos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_id", "photo_id", name=op.f("pk_clone_model_photos")),
    )
    with op.batch_alter_table("clone_model_photos", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clone_model_photos_photo_id"), ["photo_id"], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes (MariaDB refuses to drop an index a foreign key still needs).
    op.drop_table("clone_model_photos")
    op.drop_table("clone_models")
    op.drop_table("clone_photos")

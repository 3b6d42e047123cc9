"""signup bonus claims: one bonus per identity, surviving the account's erasure

Revision ID: 0018_bonus_claims
Revises: 0017_ht_media
Create Date: 2026-12-05 13:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0018_bonus_claims"
down_revision: str | None = "0017_ht_media"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signup_bonus_claims",
        sa.Column("identity_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("identity_hash", name=op.f("pk_signup_bonus_claims")),
    )
    with op.batch_alter_table("signup_bonus_claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signup_bonus_claims_user_id"), ["user_id"], unique=False)
    # No backfill: the hashes are keyed by the application's secret. An account created before this
    # revision has no claim, so erasing it and signing up again grants one more bonus, and only one.


def downgrade() -> None:
    op.drop_table("signup_bonus_claims")  # its index goes with it

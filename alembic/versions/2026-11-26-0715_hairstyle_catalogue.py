"""hairstyle catalogue

Revision ID: 0005_styles
Revises: 0004_images_jobs
Create Date: 2026-11-26 07:15:44.964822
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0005_styles"
down_revision: str | None = "0004_images_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "styles",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("thumbnail_url", sa.String(length=2048), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_styles")),
        sa.UniqueConstraint("name", name=op.f("uq_styles_name")),
    )

    # A few styles so the try-on works out of the box; administrators edit the catalogue later.
    now = datetime.now(UTC)
    styles = sa.table(
        "styles",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("description", sa.String()),
        sa.column("prompt", sa.Text()),
        sa.column("is_active", sa.Boolean()),
        sa.column("sort_order", sa.Integer()),
        sa.column("created_at", app.db.base.UTCDateTime()),
        sa.column("updated_at", app.db.base.UTCDateTime()),
    )
    catalogue = [
        ("Buzz Cut", "Very short, even all over.", "a very short even buzz cut"),
        (
            "Classic Bob",
            "Chin-length, straight, blunt ends.",
            "a chin-length straight classic bob with blunt ends",
        ),
        ("Long Waves", "Long hair with loose waves.", "long hair with soft loose beach waves"),
        ("Pixie Cut", "Short and textured on top.", "a short textured pixie cut"),
        ("Curly Afro", "Full, rounded natural curls.", "a full rounded natural curly afro"),
        (
            "Slicked Back",
            "Medium length, combed back.",
            "medium-length hair slicked straight back with a glossy finish",
        ),
    ]
    op.bulk_insert(
        styles,
        [
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"pixforge:style:{name}"),
                "name": name,
                "description": description,
                "prompt": prompt,
                "is_active": True,
                "sort_order": order,
                "created_at": now,
                "updated_at": now,
            }
            for order, (name, description, prompt) in enumerate(catalogue)
        ],
    )


def downgrade() -> None:
    op.drop_table("styles")

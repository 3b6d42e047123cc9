"""idempotency keys stored as their SHA-256

Revision ID: 0007_idempotency_digests
Revises: 0006_upload_gallery
Create Date: 2026-11-26 10:00:00
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007_idempotency_digests"
down_revision: str | None = "0006_upload_gallery"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

keys = sa.table("idempotency_keys", sa.column("id", sa.Uuid()), sa.column("key", sa.String(255)))


def upgrade() -> None:
    # Keys now compare byte for byte on every database (MariaDB's collation took 'abc' and 'ABC' for one):
    # the rows of the last day are rewritten as the application now looks them up.
    connection = op.get_bind()
    for row_id, key in connection.execute(sa.select(keys.c.id, keys.c.key)).all():
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        connection.execute(sa.update(keys).where(keys.c.id == row_id).values(key=digest))


def downgrade() -> None:
    # A digest cannot be turned back into its key; the rows only replay retries for a day.
    op.execute(sa.delete(keys))

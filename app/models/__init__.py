"""Every table, imported here so Alembic and the mappers see the whole schema."""

from app.db.base import Base
from app.models.user import User, UserRole

__all__ = ["Base", "User", "UserRole"]

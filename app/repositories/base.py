from __future__ import annotations

import uuid
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.base import Base

ModelT = TypeVar("ModelT", bound=Base)

# Where a Core statement runs: the ORM session of a request or task, or a Core connection in a transaction
# of its own (`Database.writing()`, for the hottest writes).
Executor = AsyncSession | AsyncConnection


class Repository(Generic[ModelT]):
    """Queries for one table. Repositories add and flush; they never commit and never raise HTTP errors."""

    model: type[ModelT]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, id_: uuid.UUID, *, for_update: bool = False) -> ModelT | None:
        statement: Select[Any] = select(self.model).where(self.model.id == id_)  # type: ignore[attr-defined]
        if for_update:
            statement = statement.with_for_update()
        instance: ModelT | None = await self.session.scalar(statement)
        return instance

    async def add(self, instance: ModelT) -> ModelT:
        self.session.add(instance)
        await self.session.flush()
        return instance

"""Personal models as their owner reads them: one, or a page (newest first), each with the photos it was
trained on. Their lifecycle is app/services/clones/training.py's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import CloneModel, User
from app.repositories.clones import CloneModelRepository
from app.services.pagination import decode_cursor, encode_cursor


class CloneModelNotFound(NotFound):
    default_detail = "No such model."


@dataclass(frozen=True)
class ModelView:
    model: CloneModel
    photo_ids: list[uuid.UUID]


@dataclass(frozen=True)
class ModelPage:
    items: list[ModelView]
    next_cursor: str | None


async def get(session: AsyncSession, user: User, model_id: uuid.UUID) -> ModelView:
    models = CloneModelRepository(session)
    model = await models.get_for_user(model_id, user.id)
    if model is None:
        raise CloneModelNotFound()
    return ModelView(model, (await models.photo_ids([model.id]))[model.id])


async def page(session: AsyncSession, user: User, limit: int, cursor: str | None) -> ModelPage:
    before = decode_cursor(cursor) if cursor else None
    models = CloneModelRepository(session)
    rows = await models.page_for_user(user.id, limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    photos = await models.photo_ids([model.id for model in rows])
    last = rows[-1] if more else None
    return ModelPage(
        [ModelView(model, photos[model.id]) for model in rows],
        encode_cursor(last.created_at, last.id) if last else None,
    )

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, func, or_, select

from app.models import CloneModel, CloneModelPhoto, CloneModelStatus, ClonePhoto, Upload
from app.repositories.base import Repository


class ClonePhotoRepository(Repository[ClonePhoto]):
    model = ClonePhoto

    async def count_for_user(self, user_id: uuid.UUID) -> int:
        statement = select(func.count()).select_from(ClonePhoto).where(ClonePhoto.user_id == user_id)
        return int(await self.session.scalar(statement) or 0)

    async def page_for_user(
        self, user_id: uuid.UUID, limit: int, before: tuple[datetime, uuid.UUID] | None
    ) -> list[tuple[ClonePhoto, Upload]]:
        """The user's photos with their uploads, newest first."""
        statement = (
            select(ClonePhoto, Upload)
            .join(Upload, Upload.id == ClonePhoto.upload_id)
            .where(ClonePhoto.user_id == user_id)
        )
        if before is not None:
            moment, last_id = before
            statement = statement.where(
                or_(
                    ClonePhoto.created_at < moment,
                    and_(ClonePhoto.created_at == moment, ClonePhoto.id < last_id),
                )
            )
        statement = statement.order_by(ClonePhoto.created_at.desc(), ClonePhoto.id.desc()).limit(limit)
        return [(photo, upload) for photo, upload in (await self.session.execute(statement)).all()]

    async def in_training(self, photo_id: uuid.UUID) -> bool:
        """Whether a model still training uses the photo."""
        statement = (
            select(func.count())
            .select_from(CloneModelPhoto)
            .join(CloneModel, CloneModel.id == CloneModelPhoto.model_id)
            .where(
                CloneModelPhoto.photo_id == photo_id,
                CloneModel.status == CloneModelStatus.training.value,
            )
        )
        return bool(await self.session.scalar(statement))


class CloneModelRepository(Repository[CloneModel]):
    model = CloneModel

    async def get_for_user(self, model_id: uuid.UUID, user_id: uuid.UUID) -> CloneModel | None:
        statement = select(CloneModel).where(CloneModel.id == model_id, CloneModel.user_id == user_id)
        found: CloneModel | None = await self.session.scalar(statement)
        return found

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

    async def owned_with_uploads(
        self, user_id: uuid.UUID, photo_ids: list[uuid.UUID]
    ) -> list[tuple[ClonePhoto, Upload]]:
        """Those of the photos that belong to the user, with their uploads."""
        statement = (
            select(ClonePhoto, Upload)
            .join(Upload, Upload.id == ClonePhoto.upload_id)
            .where(ClonePhoto.user_id == user_id, ClonePhoto.id.in_(photo_ids))
        )
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

    async def get_for_user(
        self, model_id: uuid.UUID, user_id: uuid.UUID, *, for_update: bool = False
    ) -> CloneModel | None:
        """The user's model unless deleted."""
        statement = select(CloneModel).where(
            CloneModel.id == model_id, CloneModel.user_id == user_id, CloneModel.deleted_at.is_(None)
        )
        if for_update:
            statement = statement.with_for_update()
        return await self.session.scalar(statement)

    async def trigger_word_taken(self, user_id: uuid.UUID, trigger_word: str) -> bool:
        """Whether any model of the user (deleted ones too: the column is unique) has this trigger word,
        compared without case (so the answer is the same on every database's collation)."""
        statement = (
            select(func.count())
            .select_from(CloneModel)
            .where(
                CloneModel.user_id == user_id,
                func.lower(CloneModel.trigger_word) == trigger_word.lower(),
            )
        )
        return bool(await self.session.scalar(statement))

    async def by_training_id(self, training_id: str, *, for_update: bool = False) -> CloneModel | None:
        statement = select(CloneModel).where(CloneModel.provider_training_id == training_id)
        if for_update:
            statement = statement.with_for_update()
        return await self.session.scalar(statement)

    async def page_for_user(
        self, user_id: uuid.UUID, limit: int, before: tuple[datetime, uuid.UUID] | None
    ) -> list[CloneModel]:
        """The user's models that are not deleted, newest first."""
        statement = select(CloneModel).where(CloneModel.user_id == user_id, CloneModel.deleted_at.is_(None))
        if before is not None:
            moment, last_id = before
            statement = statement.where(
                or_(
                    CloneModel.created_at < moment,
                    and_(CloneModel.created_at == moment, CloneModel.id < last_id),
                )
            )
        statement = statement.order_by(CloneModel.created_at.desc(), CloneModel.id.desc()).limit(limit)
        return list(await self.session.scalars(statement))

    async def training_for_user(self, user_id: uuid.UUID) -> list[CloneModel]:
        """The user's models still training, locked by this transaction."""
        statement = (
            select(CloneModel)
            .where(CloneModel.user_id == user_id, CloneModel.status == CloneModelStatus.training.value)
            .order_by(CloneModel.id)
            .with_for_update()
        )
        return list(await self.session.scalars(statement))

    async def training_not_updated_since(self, moment: datetime, limit: int) -> list[CloneModel]:
        """Models still training whose row nobody touched since `moment` (oldest first)."""
        statement = (
            select(CloneModel)
            .where(CloneModel.status == CloneModelStatus.training.value, CloneModel.updated_at < moment)
            .order_by(CloneModel.updated_at)
            .limit(limit)
        )
        return list(await self.session.scalars(statement))

    async def add_photos(self, model_id: uuid.UUID, photo_ids: list[uuid.UUID]) -> None:
        self.session.add_all(
            [CloneModelPhoto(model_id=model_id, photo_id=photo_id) for photo_id in photo_ids]
        )
        await self.session.flush()

    async def photo_ids(self, model_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        """The photos each model was trained on (a deleted photo is no longer listed)."""
        found: dict[uuid.UUID, list[uuid.UUID]] = {model_id: [] for model_id in model_ids}
        if not model_ids:
            return found
        statement = (
            select(CloneModelPhoto.model_id, CloneModelPhoto.photo_id)
            .where(CloneModelPhoto.model_id.in_(model_ids))
            .order_by(CloneModelPhoto.photo_id)
        )
        for model_id, photo_id in (await self.session.execute(statement)).all():
            found[model_id].append(photo_id)
        return found

    async def photo_uploads(self, model_id: uuid.UUID) -> list[tuple[ClonePhoto, Upload]]:
        """The photos (with their stored uploads) a model is trained on."""
        statement = (
            select(ClonePhoto, Upload)
            .join(CloneModelPhoto, CloneModelPhoto.photo_id == ClonePhoto.id)
            .join(Upload, Upload.id == ClonePhoto.upload_id)
            .where(CloneModelPhoto.model_id == model_id)
            .order_by(ClonePhoto.created_at, ClonePhoto.id)
        )
        return [(photo, upload) for photo, upload in (await self.session.execute(statement)).all()]

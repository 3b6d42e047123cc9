"""A user's photo set: the pictures of themselves a personal model is trained on. Each photo is validated
and stored exactly as `POST /uploads` does (its upload row has origin `job_input`, so it is not listed in
the gallery, and account erasure deletes it with the user's other uploads)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from app.models import ClonePhoto, Upload, UploadOrigin, User
from app.repositories.clones import ClonePhotoRepository
from app.repositories.images import UploadRepository
from app.services import images, uploads, users
from app.services.pagination import decode_cursor, encode_cursor


class TooManyPhotosInRequest(PayloadTooLarge):
    code = "too_many_photos"


class PhotoSetFull(Conflict):
    code = "photo_set_full"


class NoPhotos(BadRequest):
    code = "no_photos"
    default_detail = "Send at least one image in the `files` field."


class PhotoInUse(Conflict):
    code = "photo_in_use"
    default_detail = "A training still uses this photo; delete it once the training has finished."


class PhotoNotFound(NotFound):
    default_detail = "No such photo."


@dataclass(frozen=True)
class PhotoView:
    photo: ClonePhoto
    upload: Upload


@dataclass(frozen=True)
class PhotoPage:
    items: list[PhotoView]
    next_cursor: str | None


async def add(session: AsyncSession, ctx: Container, user: User, files: list[bytes]) -> list[PhotoView]:
    """Store every image or none: the first invalid one refuses the whole request (the caller's
    transaction is rolled back, and the objects already stored are deleted)."""
    settings = ctx.settings
    if not files:
        raise NoPhotos()
    if len(files) > settings.clone_photos_max_per_request:
        raise TooManyPhotosInRequest(
            f"At most {settings.clone_photos_max_per_request} photos may be sent in one request."
        )
    await users.lock_open(session, user.id)  # serialises concurrent uploads of one user with the count
    repository = ClonePhotoRepository(session)
    held = await repository.count_for_user(user.id)
    if held + len(files) > settings.clone_photos_max_per_user:
        raise PhotoSetFull(
            f"A photo set holds at most {settings.clone_photos_max_per_user} photos; you have {held}."
        )
    stored: list[PhotoView] = []
    try:
        for data in files:
            upload = (
                await uploads.store(
                    session,
                    ctx,
                    user.id,
                    data,
                    max_side=settings.clone_photo_max_side,
                    origin=UploadOrigin.job_input,
                )
            ).upload
            photo = await repository.add(ClonePhoto(user_id=user.id, upload_id=upload.id))
            stored.append(PhotoView(photo, upload))
    except BaseException:
        await images.delete_objects(ctx, [view.upload.storage_key for view in stored])
        raise
    return stored


async def page(session: AsyncSession, user: User, limit: int, cursor: str | None) -> PhotoPage:
    before = decode_cursor(cursor) if cursor else None
    rows = await ClonePhotoRepository(session).page_for_user(user.id, limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1][0] if more else None
    return PhotoPage(
        [PhotoView(photo, upload) for photo, upload in rows],
        encode_cursor(last.created_at, last.id) if last else None,
    )


async def delete(session: AsyncSession, ctx: Container, user: User, photo_id: uuid.UUID) -> None:
    repository = ClonePhotoRepository(session)
    photo = await repository.get(photo_id, for_update=True)
    if photo is None or photo.user_id != user.id:
        raise PhotoNotFound()
    if await repository.in_training(photo.id):
        raise PhotoInUse()
    upload = await UploadRepository(session).get(photo.upload_id)
    await session.delete(photo)
    if upload is not None:
        await session.delete(upload)
    await session.flush()
    if upload is not None:
        await images.delete_objects(ctx, [upload.storage_key])

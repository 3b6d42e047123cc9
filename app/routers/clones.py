"""AI clones: photo sets, personal models (trainings), prompt enhancement, quotas."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Query, Response, UploadFile

from app.container import Container
from app.dependencies import ContainerDep, CurrentUser, SessionDep, TextModelDep
from app.schemas.clones import (
    CloneModelIn,
    CloneModelOut,
    CloneModelPageOut,
    EnhancedOut,
    EnhanceIn,
    PhotoOut,
    PhotoPageOut,
    PhotosOut,
    QuotaOut,
    QuotasOut,
)
from app.schemas.errors import error_responses
from app.services import credits, images, uploads
from app.services.clones import photos, prompts, quotas, training, views

router = APIRouter(tags=["clones"])

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=200)]


async def photo_out(ctx: Container, view: photos.PhotoView) -> PhotoOut:
    upload = view.upload
    return PhotoOut(
        id=view.photo.id,
        url=await images.url_for(ctx, upload.storage_key),
        content_type=upload.content_type,
        width=upload.width,
        height=upload.height,
        size=upload.size,
        created_at=view.photo.created_at,
    )


@router.post("/photos", status_code=201, response_model=PhotosOut, responses=error_responses(413, 415))
async def add_photos(
    files: Annotated[list[UploadFile], File(description="One or several images (PNG, JPEG or WebP).")],
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
) -> PhotosOut:
    """Add photos of yourself to your set (multipart, field `files`, repeated). Each is validated like
    `POST /uploads`; one invalid image refuses the whole request and nothing is kept."""
    settings = container.settings
    if len(files) > settings.clone_photos_max_per_request:
        raise photos.TooManyPhotosInRequest(
            f"At most {settings.clone_photos_max_per_request} photos may be sent in one request."
        )
    limit = min(settings.clone_photo_max_bytes, settings.upload_max_bytes)
    data: list[bytes] = []
    for file in files:
        chunk = await file.read(limit + 1)
        if len(chunk) > limit:
            raise uploads.ImageTooLarge(f"The file {file.filename!r} is larger than {limit} bytes.")
        data.append(chunk)
    stored = await photos.add(session, container, user, data)
    return PhotosOut(items=[await photo_out(container, view) for view in stored])


@router.get("/photos", response_model=PhotoPageOut, responses=error_responses(400))
async def list_photos(
    user: CurrentUser, session: SessionDep, container: ContainerDep, limit: Limit = 50, cursor: Cursor = None
) -> PhotoPageOut:
    """Your photo set, newest first; pass `next_cursor` back as `cursor` for the next page."""
    found = await photos.page(session, user, limit, cursor)
    return PhotoPageOut(
        items=[await photo_out(container, view) for view in found.items], next_cursor=found.next_cursor
    )


@router.delete("/photos/{photo_id}", status_code=204, responses=error_responses(404))
async def delete_photo(
    photo_id: uuid.UUID, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> Response:
    """Delete one of your photos (409 while a training uses it)."""
    await photos.delete(session, container, user, photo_id)
    return Response(status_code=204)


def model_out(view: views.ModelView) -> CloneModelOut:
    model = view.model
    return CloneModelOut(
        id=model.id,
        name=model.name,
        trigger_word=model.trigger_word,
        status=model.status,
        version=model.provider_version,
        error=model.error_message,
        logs_url=model.logs_url,
        credits=credits.to_credits(model.credits_reserved),
        photo_ids=view.photo_ids,
        created_at=model.created_at,
        finished_at=model.finished_at,
    )


@router.post(
    "/models",
    status_code=202,
    response_model=CloneModelOut,
    responses=error_responses(400, 402, 404, 409, 503),
)
async def create_model(
    body: CloneModelIn,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    background: BackgroundTasks,
) -> CloneModelOut:
    """Train a personal model on some of your photos (at least CLONE_TRAINING_MIN_PHOTOS). Its credits
    are held now and spent only if the training succeeds; it starts on Replicate right after this answer
    (`training`), and `GET /models/{id}` shows it end `ready`, `failed` (with the reason) or `canceled`.
    403 `plan_required` past your plan's models, 409 for a trigger word you used already, 402 without
    the credits, 503 when training is not configured."""
    view, base_input = await training.create(
        session,
        container,
        user,
        name=body.name,
        trigger_word=body.trigger_word,
        photo_ids=body.photo_ids,
        options=body.options.model_dump(exclude_none=True) if body.options else {},
    )
    # BackgroundTasks run after the session dependency committed the model and its hold.
    background.add_task(training.start, container, view.model.id, base_input)
    return model_out(view)


@router.get("/models", response_model=CloneModelPageOut, responses=error_responses(400))
async def list_models(
    user: CurrentUser, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> CloneModelPageOut:
    """Your personal models, newest first; pass `next_cursor` back as `cursor` for the next page."""
    found = await views.page(session, user, limit, cursor)
    return CloneModelPageOut(items=[model_out(view) for view in found.items], next_cursor=found.next_cursor)


@router.get("/models/{model_id}", response_model=CloneModelOut, responses=error_responses(404))
async def get_model(model_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> CloneModelOut:
    return model_out(await views.get(session, user, model_id))


@router.delete("/models/{model_id}", status_code=204, responses=error_responses(404))
async def delete_model(
    model_id: uuid.UUID, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> Response:
    """Delete a model: a running training is cancelled (its credits come back) and the trained version
    is deleted on Replicate where it allows. A trained model still counts toward your plan's models."""
    await training.delete(session, container, user, model_id)
    return Response(status_code=204)


@router.post("/prompts/enhance", response_model=EnhancedOut, responses=error_responses(503))
async def enhance_prompt(
    body: EnhanceIn, user: CurrentUser, session: SessionDep, container: ContainerDep, model: TextModelDep
) -> EnhancedOut:
    """Your idea rewritten by the configured LLM into a detailed text-to-image prompt (free; 503
    `provider_not_configured` without an LLM key, 502 when the model gives no usable answer)."""
    enhanced = await prompts.enhance(session, container.settings, model, body.prompt, body.style)
    return EnhancedOut(original=enhanced.original, enhanced=enhanced.enhanced)


@router.get("/users/me/quotas", response_model=QuotasOut)
async def my_quotas(user: CurrentUser, session: SessionDep, container: ContainerDep) -> QuotasOut:
    """Your plan's quotas: personal models (ever) and image generations (per UTC day), each with what is
    used, the total (null: unlimited), what remains and, for a daily quota, when it resets."""
    views = await quotas.all_for(session, container.settings, user)
    return QuotasOut(
        plan=user.plan,
        quotas=[
            QuotaOut(
                name=view.name.value,
                period=view.period.value,
                used=view.used,
                total=view.total,
                remaining=view.remaining,
                resets_at=view.resets_at,
            )
            for view in views
        ],
    )

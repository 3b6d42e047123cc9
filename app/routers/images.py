from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile

from app.container import Container
from app.dependencies import CallerDep, ContainerDep, CurrentUser, IdempotentDep, SessionDep
from app.errors import BadRequest
from app.models import Job, JobKind, JobStatus, Upload
from app.schemas.errors import error_responses
from app.schemas.images import (
    GenerateAcceptedOut,
    GenerateIn,
    ImageOut,
    ImagePageOut,
    ImageUpdateIn,
    JobAcceptedOut,
    JobOutputOut,
    RemovedBackgroundOut,
    StyleCategoryOut,
    StyleOut,
    UploadOut,
    VectorizedOut,
    VectorizeIn,
    VectorizeOptionsIn,
)
from app.services import credits, generation, images, job_submission, jobs, uploads
from app.services.images import GalleryJob, GalleryUpload

router = APIRouter(tags=["images"])


async def read_limited(file: StarletteUploadFile, limit: int) -> bytes:
    """Read at most `limit` bytes (+1 to detect more) so an oversize file is refused without holding it."""
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise uploads.ImageTooLarge(f"The file is larger than {limit} bytes.")
    return data


async def job_out(ctx: Container, job: Job | GalleryJob) -> ImageOut:
    outputs = [
        JobOutputOut(
            view=output.get("view", "main"),
            url=await images.url_for(ctx, output["key"]),
            content_type=output["content_type"],
        )
        for output in job.outputs
    ]
    # What a text-to-image job was asked for (other kinds keep their options to themselves).
    asked = job.options if job.kind == JobKind.generation.value else {}
    return ImageOut(
        id=job.id,
        kind=job.kind,
        status=job.status,
        outputs=outputs,
        input_url=await images.url_for(ctx, job.input_key) if job.input_key else None,
        credits=credits.to_credits(job.credits_reserved),
        error=job.error_message,
        error_code=job.error_code,
        attempts=job.attempts,
        time_taken=job.time_taken_ms / 1000 if job.time_taken_ms is not None else None,
        is_favourite=job.is_favourite,
        description=job.description,
        created_at=job.created_at,
        finished_at=job.finished_at,
        prompt=asked.get("prompt"),
        enhanced_prompt=asked.get("enhanced_prompt"),
        model_id=asked.get("model_id"),
    )


async def upload_out(ctx: Container, upload: Upload | GalleryUpload) -> ImageOut:
    url = await images.url_for(ctx, upload.storage_key)
    return ImageOut(
        id=upload.id,
        kind=images.UPLOAD_KIND,
        status=JobStatus.completed.value,
        outputs=[JobOutputOut(view="main", url=url, content_type=upload.content_type)],
        input_url=None,
        credits=credits.to_credits(0),
        error=None,
        error_code=None,
        attempts=0,
        time_taken=None,
        is_favourite=upload.is_favourite,
        description=upload.description,
        created_at=upload.created_at,
        finished_at=upload.created_at,
        width=upload.width,
        height=upload.height,
        size=upload.size,
    )


async def item_out(ctx: Container, item: images.GalleryItem | images.GalleryRecord) -> ImageOut:
    if isinstance(item, Upload | GalleryUpload):
        return await upload_out(ctx, item)
    return await job_out(ctx, item)


@router.post("/uploads", status_code=201, response_model=UploadOut, responses=error_responses(413, 415))
async def upload(
    user: CurrentUser, session: SessionDep, container: ContainerDep, file: Annotated[UploadFile, File()]
) -> UploadOut:
    """PNG, JPEG or WEBP, decided from the bytes; orientation applied and metadata dropped (a file that
    holds nothing but pixels is kept as sent)."""
    data = await read_limited(file, container.settings.upload_max_bytes)
    stored = (await uploads.store(session, container, user.id, data)).upload
    return UploadOut(
        id=stored.id,
        url=await images.url_for(container, stored.storage_key),
        content_type=stored.content_type,
        width=stored.width,
        height=stored.height,
        size=stored.size,
    )


def _accepted(job: Job) -> JobAcceptedOut:
    return JobAcceptedOut(image_id=job.id, status=job.status, status_url=f"/api/v1/images/{job.id}")


@router.post(
    "/images/remove-background",
    response_model=RemovedBackgroundOut,
    responses={
        **error_responses(402, 404, 413, 415),
        202: {"model": JobAcceptedOut, "description": "With ?async=true: the job, accepted."},
    },
)
async def remove_background(
    caller: CallerDep,
    session: SessionDep,
    container: ContainerDep,
    idempotent: IdempotentDep,
    file: Annotated[UploadFile | None, File()] = None,
    upload_id: Annotated[uuid.UUID | None, Form()] = None,
    run_async: Annotated[bool, Query(alias="async")] = False,
) -> Response:
    """Cut out the subject. By default waits and returns the PNG inline (base64); with `?async=true`
    answers 202 at once with the job to poll. Costs REMOVE_BACKGROUND_COST_CREDITS, charged on success.
    Send an `Idempotency-Key` header to make retries safe: a retry gets the first answer again (rebuilt
    from the job it made) and is never charged twice."""
    data = await read_limited(file, container.settings.upload_max_bytes) if file is not None else None
    fields = {"file": data, "upload_id": upload_id, "async": run_async}
    job = job_submission.request(JobKind.remove_background, data, upload_id, {})
    if run_async:

        async def submit() -> Job:
            return (await job_submission.submit_request(session, container, caller.user_id, job)).job

        return await idempotent.start_job(submit, _accepted, fields)

    async def shape(finished: jobs.FinishedJob) -> RemovedBackgroundOut:
        return RemovedBackgroundOut(
            image_id=finished.job.id,
            image_base64=base64.b64encode(finished.outputs[0].data).decode(),
            content_type="image/png",
            credits=credits.to_credits(finished.balance),
        )

    return await idempotent.wait_for_job(job, shape, fields)


async def _vectorize_request(request: Request, container: Container) -> tuple[VectorizeIn, bytes | None]:
    """JSON {upload_id, mode, options}, or multipart with `file` (or `upload_id`), `mode`, `options`."""
    try:
        # Media types are case-insensitive (RFC 9110 8.3.1).
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return VectorizeIn.model_validate_json(await request.body()), None
        async with request.form() as form:  # closes the spooled files
            raw_options = form.get("options")
            fields: dict[str, Any] = {
                "mode": form.get("mode") or "full",
                "options": VectorizeOptionsIn.model_validate_json(str(raw_options)) if raw_options else {},
                "upload_id": form.get("upload_id"),
            }
            file = form.get("file")
            data = (
                await read_limited(file, container.settings.upload_max_bytes)
                if isinstance(file, StarletteUploadFile)
                else None
            )
        return VectorizeIn.model_validate(fields), data
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from exc


@router.post(
    "/images/vectorize",
    response_model=VectorizedOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                # These schemas join the document's components in app.main.
                "application/json": {"schema": {"$ref": f"#/components/schemas/{VectorizeIn.__name__}"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "upload_id": {"type": "string", "format": "uuid"},
                            "mode": {"type": "string", "enum": ["preview", "full"], "default": "full"},
                            "options": {"$ref": f"#/components/schemas/{VectorizeOptionsIn.__name__}"},
                        },
                    },
                    "encoding": {"options": {"contentType": "application/json"}},
                },
            },
        }
    },
    responses=error_responses(402, 404, 413, 415, 422),
)
async def vectorize(request: Request, container: ContainerDep, idempotent: IdempotentDep) -> Response:
    """PNG or JPEG to SVG. `preview` (cheaper: fewer colours, smaller) or `full`; charged on success.
    Send an `Idempotency-Key` header to make retries safe: a retry gets the first answer again (rebuilt
    from the job it made) and is never charged twice."""
    body, data = await _vectorize_request(request, container)
    if data is None and body.upload_id is None:
        raise BadRequest("Send a file or an upload_id.")
    upload_id = None if data is not None else body.upload_id
    job = job_submission.request(
        JobKind.vectorize, data, upload_id, {"mode": body.mode, "options": body.options.model_dump()}
    )

    async def shape(finished: jobs.FinishedJob) -> VectorizedOut:
        return VectorizedOut(
            image_id=finished.job.id,
            mode=body.mode,
            svg=finished.outputs[0].data.decode(),
            url=await images.url_for(container, finished.job.outputs[0]["key"]),
            credits=credits.to_credits(finished.balance),
        )

    fields = {"file": data, "upload_id": upload_id, "options": job.options}
    return await idempotent.wait_for_job(job, shape, fields)


class GalleryKind(StrEnum):
    remove_background = JobKind.remove_background.value
    vectorize = JobKind.vectorize.value
    generate = JobKind.generate.value
    generation = JobKind.generation.value
    upload = images.UPLOAD_KIND


@router.get("/images", response_model=ImagePageOut, responses=error_responses(400))
async def gallery(
    caller: CallerDep,
    container: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    kind: Annotated[GalleryKind | None, Query()] = None,
    status: Annotated[str | None, Query(pattern="^(PENDING|PROCESSING|COMPLETED|FAILED)$")] = None,
    favourite: Annotated[bool | None, Query()] = None,
) -> ImagePageOut:
    """Your jobs and the images you uploaded, newest first. Images sent inline with a job are that
    job's `input_url`, not items of their own."""
    page = await images.gallery_records(
        container.database,
        caller.user_id,
        limit=limit,
        cursor=cursor,
        kind=kind.value if kind else None,
        status=status,
        favourite=favourite,
    )
    return ImagePageOut(
        items=[await item_out(container, item) for item in page.items], next_cursor=page.next_cursor
    )


@router.get("/images/{image_id}", response_model=ImageOut, responses=error_responses(404))
@router.get("/image/status/{image_id}", response_model=ImageOut, include_in_schema=False)
async def get_image(
    image_id: uuid.UUID, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> ImageOut:
    return await item_out(container, await images.get_item(session, user, image_id))


@router.patch("/images/{image_id}", response_model=ImageOut, responses=error_responses(404))
async def update_image(
    image_id: uuid.UUID, body: ImageUpdateIn, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> ImageOut:
    changes = body.model_dump(exclude_unset=True)
    return await item_out(container, await images.update_item(session, user, image_id, changes))


@router.delete("/images/{image_id}", status_code=204, responses=error_responses(404))
async def delete_image(
    image_id: uuid.UUID, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> Response:
    """The job and its results, or the uploaded image (refused while a job still runs on it)."""
    await images.delete_item(session, container, user, image_id)
    return Response(status_code=204)


@router.get("/styles", response_model=list[StyleOut])
async def styles(
    session: SessionDep,
    category: Annotated[
        str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="only this tab's styles")
    ] = None,
) -> list[StyleOut]:
    """Hairstyles the try-on can apply, in catalogue order."""
    return [StyleOut.model_validate(style) for style in await generation.list_styles(session, category)]


@router.get("/styles/categories", response_model=list[StyleCategoryOut])
async def style_categories(session: SessionDep) -> list[StyleCategoryOut]:
    """The tabs of the catalogue that have active styles, by name, with how many each has."""
    return [
        StyleCategoryOut(name=name, styles=count)
        for name, count in await generation.style_categories(session)
    ]


@router.post(
    "/image/generate",
    status_code=202,
    response_model=GenerateAcceptedOut,
    responses=error_responses(402, 404, 429, 503),
)
async def generate(
    body: GenerateIn,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    """Try a hairstyle on a photo: answers at once; the front view (and any other views asked for) are
    generated on Replicate. GENERATE_COST_CREDITS per view, charged on success. With an
    `Idempotency-Key` header a retry gets the first answer and starts nothing more."""

    async def submit() -> Job:
        return await generation.submit(
            session,
            container,
            user,
            style_id=body.style_id,
            upload_id=body.upload_id,
            image_url=str(body.image_input_url) if body.image_input_url else None,
            views=body.views,
        )

    return await idempotent.start_job(submit, lambda job: GenerateAcceptedOut(image_id=job.id))


@router.get("/images/{image_id}/events", response_class=StreamingResponse, responses=error_responses(404))
async def image_events(
    image_id: uuid.UUID, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> StreamingResponse:
    """Server-Sent Events: a `status` event at every change until the job completes or fails."""
    await images.get_job(session, user, image_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        async for job in images.status_changes(container, user.id, image_id):
            payload = (await job_out(container, job)).model_dump_json()
            yield f"event: status\nid: {job.updated_at.timestamp()}\ndata: {payload}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

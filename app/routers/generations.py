"""Text to image: POST /generations (the images land in the gallery, kind `generation`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.dependencies import ContainerDep, CurrentUser, IdempotentDep, SessionDep, TextModelDep
from app.models import Job
from app.schemas.generations import GenerationIn
from app.schemas.images import JobAcceptedOut
from app.services.clones import generations

router = APIRouter(tags=["clones"])


def _accepted(job: Job) -> JobAcceptedOut:
    return JobAcceptedOut(image_id=job.id, status=job.status, status_url=f"/api/v1/images/{job.id}")


@router.post(
    "/generations",
    status_code=202,
    response_model=JobAcceptedOut,
    responses={
        403: {"description": "`plan_required`: the plan includes no generations."},
        404: {"description": "`not_found`: no such model of yours."},
        409: {"description": "`model_not_ready`: the model is still training, failed or was cancelled."},
        429: {"description": "`quota_exceeded` (the daily quota, with `resets_at`) or `rate_limited`."},
        503: {"description": "`provider_not_configured`: no Replicate token, or no LLM key for enhancement."},
    },
)
async def generate(
    body: GenerationIn,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    idempotent: IdempotentDep,
    text_model: TextModelDep,
) -> JSONResponse:
    """Images from a prompt, on one of your ready personal models (`model_id`: its trigger word is woven
    into the prompt) or on the default model (TEXT_TO_IMAGE_MODEL). With `enhance_prompt` the
    configured LLM rewrites the prompt first. Answers 202 with the job to poll (`status_url`) or to
    follow (`/images/{id}/events`). GENERATION_COST_CREDITS per image asked for, reserved now and
    charged only if the job completes; each accepted request counts once against the plan's daily
    generation quota. With an `Idempotency-Key` header a retry gets the first answer and starts nothing
    more."""
    request = generations.GenerationRequest(**body.model_dump())
    # The preparation (checks, the LLM's rewrite) runs before the key is claimed, since the rewrite
    # gives the request's connection back; a retry that will be given the first answer skips it, so
    # that neither a quota the first request filled nor the LLM can refuse the replay.
    replay = await idempotent.answered()
    prepared = None if replay else await generations.prepare(session, container, user, request, text_model)

    async def submit() -> Job:
        # (Prepared now only if the first answer expired in the meantime.)
        ready = prepared or await generations.prepare(session, container, user, request, text_model)
        return await generations.submit(session, container, user, ready)

    return await idempotent.start_job(submit, _accepted)

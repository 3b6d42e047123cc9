"""Hairstyle try-on: the styles, a submission (checked, then submitted like any job; the engine is
app/services/engines/hairstyle.py) and Replicate's webhook, which wakes the run waiting on a
prediction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.errors import BadRequest, Conflict, NotFound
from app.integrations.images.replicate import (
    WebhookVerificationError,
    prediction_from_payload,
    training_from_payload,
)
from app.models import Job, JobKind, JobStatus, Style, User
from app.repositories.images import StyleRepository
from app.services import images as images_service
from app.services import job_submission, webhook_inbox
from app.services import uploads as uploads_service
from app.services import users as users_service
from app.services.auth import rate_limit
from app.services.clones import quotas
from app.services.clones import training as clone_training
from app.services.engines import engine_for
from app.services.engines.predictions import replicate_client
from app.services.webhook_inbox import Outcome


async def list_styles(session: AsyncSession, category: str | None = None) -> list[Style]:
    return await StyleRepository(session).active(category)


async def style_categories(session: AsyncSession) -> list[tuple[str, int]]:
    """(category, active styles in it), by name."""
    return await StyleRepository(session).active_categories()


async def submit(
    session: AsyncSession,
    ctx: Container,
    user: User,
    *,
    style_id: uuid.UUID,
    upload_id: uuid.UUID | None,
    image_url: str | None,
    views: Sequence[str],
) -> Job:
    """Checks come first (provider configured, rate limit, style, input): a refusal reserves nothing."""
    replicate_client(ctx)
    await rate_limit(ctx, ctx.settings.rate_limit_generate_per_user, "generate", "user", str(user.id))
    style = await StyleRepository(session).get(style_id)
    if style is None or not style.is_active:
        raise NotFound("No such style.")
    upload = None
    if upload_id is not None:
        upload = await uploads_service.get_owned(session, user.id, upload_id)
    elif image_url is None:
        raise BadRequest("Send an upload_id or an image_input_url.")
    options = engine_for(JobKind.generate).options(
        {"style_id": str(style.id), "prompt": style.prompt, "views": views, "image_url": image_url}
    )
    # Under the account's lock, so two requests cannot both take the day's last generation.
    await users_service.lock_open(session, user.id)
    await quotas.require(session, ctx.settings, user, quotas.QuotaName.generations)
    return await job_submission.submit(session, ctx, user.id, JobKind.generate, upload, options)


# The views a finished try-on's side views add, in the order the Hair Try-On SPA shows them.
SIDE_VIEWS = ("right", "left", "back")


class NoFrontView(Conflict):
    code = "image_not_finished"
    default_detail = "Side views are made from a finished try-on's front view; this image has none yet."


async def styles_by_id(session: AsyncSession, style_ids: list[uuid.UUID]) -> dict[uuid.UUID, Style]:
    """These styles by id, retired ones included (a job keeps its style's name)."""
    return {style.id: style for style in await StyleRepository(session).by_ids(style_ids)}


async def submit_side_views(session: AsyncSession, ctx: Container, user: User, parent_id: uuid.UUID) -> Job:
    """The right, left and back views of a finished try-on, made from its front OUTPUT (so they show the
    new hairstyle, as the original Hair Try-On server did), as a child job of it charged like any view.
    Another user's id is 404; an unfinished try-on, or one without a front view, is 409."""
    replicate_client(ctx)
    parent = await images_service.get_job(session, user, parent_id)
    front = next((output for output in parent.outputs if output.get("view") == "front"), None)
    if parent.kind != JobKind.generate.value or parent.parent_job_id is not None:
        raise NoFrontView("Side views are made from a hairstyle try-on's front view.")
    if parent.status != JobStatus.completed.value or front is None:
        raise NoFrontView()
    await rate_limit(ctx, ctx.settings.rate_limit_generate_per_user, "generate", "user", str(user.id))
    options = engine_for(JobKind.generate).options(
        {
            "style_id": parent.options.get("style_id"),
            "prompt": parent.options.get("prompt", ""),
            "views": list(SIDE_VIEWS),
            "image_url": None,
        }
    )
    await users_service.lock_open(session, user.id)
    await quotas.require(session, ctx.settings, user, quotas.QuotaName.generations)
    return await job_submission.submit(
        session,
        ctx,
        user.id,
        JobKind.generate,
        None,
        options,
        input_key=front["key"],
        parent_job_id=parent.id,
    )


async def receive_webhook(
    session: AsyncSession, ctx: Container, body: bytes, headers: Mapping[str, str]
) -> Outcome:
    client = replicate_client(ctx)
    try:
        payload = client.verify_webhook(body, headers)
    except WebhookVerificationError as exc:
        raise await webhook_inbox.refused(session, "replicate", str(exc)) from exc
    training_id = payload.get("id")
    # A training's output is an object (the new version); a prediction's is a URL or a list of them.
    if isinstance(payload.get("output"), dict) or (
        isinstance(training_id, str) and await clone_training.is_training(session, training_id)
    ):
        # One webhook URL for both: a training of a personal model ends that model's training.
        return await clone_training.receive_webhook(session, headers, payload, training_from_payload(payload))
    prediction = prediction_from_payload(payload)

    async def apply() -> bool:
        signal = ctx.prediction_signals.get(prediction.id)
        if signal is not None:
            signal.set()  # the runner waiting on it fetches the result now
        return True

    event_id = headers.get("webhook-id") or f"{prediction.id}:{prediction.status}"
    return await webhook_inbox.receive(
        session, "replicate", event_id, f"prediction.{prediction.status}", payload, apply
    )

"""Hairstyle try-on on Replicate: one prediction per requested view, awaited by polling, woken early by
Replicate's webhook; outputs are copied from Replicate's temporary URLs into our storage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.errors import BadRequest, NotFound, ProviderNotConfigured
from app.integrations.images.base import EngineError
from app.integrations.images.replicate import (
    ReplicateClient,
    WebhookVerificationError,
    prediction_from_payload,
)
from app.models import Job, JobKind, Style, User
from app.repositories.images import JobRepository, StyleRepository
from app.services import credits, webhook_inbox
from app.services import uploads as uploads_service
from app.services import users as users_service
from app.services.auth import rate_limit
from app.services.webhook_inbox import Outcome

log = structlog.get_logger("app.generation")

VIEW_PROMPTS = {
    "front": "front view, facing the camera",
    "left": "left side profile view",
    "right": "right side profile view",
    "back": "view from behind, showing the back of the head",
}


class InvalidReplicateWebhook(BadRequest):
    code = "invalid_signature"
    default_detail = "The webhook signature is missing, wrong or too old."


def _client(ctx: Container) -> ReplicateClient:
    if ctx.replicate is None:
        raise ProviderNotConfigured(
            "Image generation is not configured on this server (REPLICATE_API_TOKEN)."
        )
    return ctx.replicate


async def list_styles(session: AsyncSession) -> list[Style]:
    return await StyleRepository(session).active()


async def submit(
    session: AsyncSession,
    ctx: Container,
    user: User,
    *,
    style_id: uuid.UUID,
    upload_id: uuid.UUID | None,
    image_url: str | None,
    views: list[str],
) -> Job:
    """Checks come first (provider configured, rate limit, style, input): a refusal reserves nothing."""
    _client(ctx)
    await rate_limit(ctx, ctx.settings.rate_limit_generate_per_user, "generate", "user", str(user.id))
    style = await StyleRepository(session).get(style_id)
    if style is None or not style.is_active:
        raise NotFound("No such style.")
    # Serialised with the account's erasure (which takes this lock too): submitted before it, or refused.
    await users_service.lock_open(session, user.id)
    input_key = None
    if upload_id is not None:
        upload = await uploads_service.get_owned(session, user, upload_id)
        input_key = upload.storage_key
    elif image_url is None:
        raise BadRequest("Send an upload_id or an image_input_url.")
    job_id = uuid.uuid4()
    cost = credits.to_millicredits(ctx.settings.generate_cost_credits) * len(views)
    job = await JobRepository(session).add(
        Job(
            id=job_id,
            user_id=user.id,
            kind=JobKind.generate.value,
            input_upload_id=upload_id,
            input_key=input_key,
            options={
                "style_id": str(style.id),
                "prompt": style.prompt,
                "views": views,
                "image_url": image_url,
            },
            credits_reserved=cost,
            reservation_key=f"job:{job_id}:reserve" if cost else None,
            provider="replicate",
        )
    )
    if cost:
        assert job.reservation_key is not None
        await credits.reserve(session, user.id, cost, job.reservation_key, reference=f"job:{job_id}")
    return job


async def generate(
    ctx: Container, job_id: uuid.UUID, input_key: str | None, options: dict[str, Any]
) -> list[tuple[bytes, str, str]]:
    """Run every view; returns (bytes, content type, view). Called by the job runner."""
    client = _client(ctx)
    settings = ctx.settings
    image_url = options.get("image_url") or await ctx.storage.url(str(input_key), 3600)
    webhook_url = (
        f"{settings.public_base_url}/api/v1/webhooks/replicate" if settings.replicate_webhook_secret else None
    )
    outputs = []
    for view in options.get("views", ["front"]):
        prompt = (
            f"Give this person {options['prompt']}; {VIEW_PROMPTS[view]};"
            " photorealistic, same face and lighting."
        )
        prediction = await client.create_prediction(
            settings.replicate_model,
            {"prompt": prompt, "image_input": [image_url], "max_images": 1, "size": "2K"},
            webhook_url=webhook_url,
            idempotency_key=f"{job_id}:{view}",
        )
        await _record_prediction(ctx, job_id, view, prediction.id)
        done = await _await_prediction(ctx, client, prediction.id)
        if done.status != "succeeded" or not done.output_urls:
            raise EngineError(
                "generation_failed", done.error or f"The prediction ended {done.status}.", retryable=False
            )
        data, content_type = await client.download(done.output_urls[0], settings.replicate_download_max_bytes)
        outputs.append((data, content_type, view))
    return outputs


async def _record_prediction(ctx: Container, job_id: uuid.UUID, view: str, prediction_id: str) -> None:
    async with ctx.database.session_scope() as session:
        job = await JobRepository(session).get(job_id)
        if job is not None:
            # Each view may take the whole prediction timeout: renew the lease so the recovery does not
            # take this live job for an abandoned one and start it twice.
            job.lease_until = utcnow() + timedelta(
                seconds=ctx.settings.job_lease_seconds + ctx.settings.replicate_prediction_timeout_seconds
            )
            job.provider_job_id = prediction_id
            job.options = {
                **job.options,
                "predictions": {**job.options.get("predictions", {}), view: prediction_id},
            }


async def _await_prediction(ctx: Container, client: ReplicateClient, prediction_id: str) -> Any:
    """Poll until terminal; a verified webhook for this prediction cuts the wait short."""
    settings = ctx.settings
    signal = ctx.prediction_signals.setdefault(prediction_id, asyncio.Event())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.replicate_prediction_timeout_seconds
    try:
        while True:
            prediction = await client.get_prediction(prediction_id)
            if prediction.status in ("succeeded", "failed", "canceled", "aborted"):
                return prediction
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise EngineError("provider_timeout", "The generation took too long.", retryable=False)
            try:
                await asyncio.wait_for(
                    signal.wait(), timeout=min(settings.replicate_poll_interval_seconds, remaining)
                )
            except TimeoutError:
                continue
            signal.clear()
    finally:
        ctx.prediction_signals.pop(prediction_id, None)


async def receive_webhook(
    session: AsyncSession, ctx: Container, body: bytes, headers: Mapping[str, str]
) -> Outcome:
    client = _client(ctx)
    try:
        payload = client.verify_webhook(body, headers)
    except WebhookVerificationError as exc:
        log.warning("replicate.webhook_rejected", reason=str(exc))
        raise InvalidReplicateWebhook() from exc
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

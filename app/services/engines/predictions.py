"""What the engines that run on Replicate share: the configured client, the webhook URL Replicate calls
back, recording a started prediction on its job, and waiting for a prediction to end (by polling, woken
early by Replicate's webhook: services/generation.receive_webhook)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.errors import ProviderNotConfigured
from app.integrations.images.base import EngineError, Prediction, PredictionClient, ReplicateApi
from app.integrations.images.replicate import TERMINAL_STATUSES
from app.repositories.images import JobRepository


def replicate_client(ctx: Container) -> ReplicateApi:
    if ctx.replicate is None:
        raise ProviderNotConfigured(
            "Image generation is not configured on this server (REPLICATE_API_TOKEN)."
        )
    return ctx.replicate


def webhook_url(settings: Settings) -> str | None:
    """Where Replicate reports a prediction's end; without a secret to verify it, polling alone."""
    if not settings.replicate_webhook_secret:
        return None
    return f"{settings.public_base_url}/api/v1/webhooks/replicate"


async def record_prediction(ctx: Container, job_id: uuid.UUID, view: str, prediction_id: str) -> None:
    async with ctx.database.session_scope() as session:
        job = await JobRepository(session).get(job_id)
        if job is not None:
            # Each prediction may take the whole prediction timeout: renew the lease so the recovery does
            # not take this live job for an abandoned one and start it twice.
            job.lease_until = utcnow() + timedelta(
                seconds=ctx.settings.job_lease_seconds + ctx.settings.replicate_prediction_timeout_seconds
            )
            job.provider_job_id = prediction_id
            job.options = {
                **job.options,
                "predictions": {**job.options.get("predictions", {}), view: prediction_id},
            }


async def await_prediction(ctx: Container, client: PredictionClient, prediction_id: str) -> Prediction:
    """Poll until terminal; a verified webhook for this prediction cuts the wait short."""
    settings = ctx.settings
    signal = ctx.prediction_signals.setdefault(prediction_id, asyncio.Event())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.replicate_prediction_timeout_seconds
    try:
        while True:
            prediction = await client.get_prediction(prediction_id)
            if prediction.status in TERMINAL_STATUSES:
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

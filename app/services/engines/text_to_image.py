"""Text to image on Replicate (POST /generations): one prediction asking for every image at once, on the
user's personal model or the default one (the submission, app/services/clones/generations.py, built
its input); awaited by polling, woken early by Replicate's webhook; the images are copied from
Replicate's temporary URLs into our storage by the runner."""

from __future__ import annotations

from typing import Any

from app.container import Container
from app.integrations.images.base import IMAGE_EXTENSIONS, EngineError
from app.models import JobKind, UsageAction
from app.services.credits import to_millicredits
from app.services.engines.base import Engine, JobOutput, JobWork
from app.services.engines.predictions import (
    await_prediction,
    record_prediction,
    replicate_client,
    webhook_url,
)

PREDICTION_VIEW = "generation"


def output_view(index: int) -> str:
    """The view name of the index-th image (from 0): `image-1`, `image-2`..."""
    return f"image-{index + 1}"


class TextToImage(Engine):
    kind = JobKind.generation

    def options(self, requested: dict[str, Any]) -> dict[str, Any]:
        """`requested`: {"prompt", "enhanced_prompt", "negative_prompt", "model_id", "provider_model",
        "provider_prompt", "num_outputs", "input" (the prediction's input)}; each image is paid for."""
        return {**requested, "num_outputs": max(1, int(requested.get("num_outputs") or 1))}

    def cost(self, ctx: Container, options: dict[str, Any]) -> int:
        return to_millicredits(ctx.settings.generation_cost_credits) * int(options.get("num_outputs") or 1)

    def captured(self, options: dict[str, Any], reserved: int, outputs: list[JobOutput]) -> int:
        """Each delivered image's share of the reservation (what was reserved per image, whatever the
        price setting says now)."""
        wanted = int(options.get("num_outputs") or 1)
        delivered = min(len(outputs), wanted)
        return reserved * delivered // wanted if delivered < wanted else reserved

    def usage_action(self, options: dict[str, Any]) -> UsageAction:
        return UsageAction.generation

    def provider(self, ctx: Container) -> str:
        return "replicate"

    def retention_hours(self, ctx: Container) -> int:
        return ctx.settings.retention_hours_generation

    def output_names(self, options: dict[str, Any]) -> list[tuple[str, str]]:
        # The images come in whatever type the provider returned.
        extensions = sorted(set(IMAGE_EXTENSIONS.values()) | {"bin"})
        count = int(options.get("num_outputs") or 1)
        return [(output_view(index), extension) for index in range(count) for extension in extensions]

    async def execute(self, ctx: Container, work: JobWork) -> list[JobOutput]:
        client = replicate_client(ctx)
        settings = ctx.settings
        options = work.options
        wanted = int(options.get("num_outputs") or 1)
        prediction = await client.create_prediction(
            str(options["provider_model"]),
            dict(options["input"]),
            webhook_url=webhook_url(settings),
            idempotency_key=f"{work.job_id}:{PREDICTION_VIEW}",
        )
        await record_prediction(ctx, work.job_id, PREDICTION_VIEW, prediction.id)
        done = await await_prediction(ctx, client, prediction.id)
        if done.status != "succeeded" or not done.output_urls:
            raise EngineError(
                "generation_failed", done.error or f"The prediction ended {done.status}.", retryable=False
            )
        # Fewer than asked (the safety filter dropped some): the delivered ones complete the job, and
        # only they are charged (`captured`); the rest of the reservation goes back.
        outputs = []
        for index, url in enumerate(done.output_urls[:wanted]):
            data, content_type = await client.download(url, settings.replicate_download_max_bytes)
            outputs.append(JobOutput.image(data, content_type, output_view(index)))
        return outputs

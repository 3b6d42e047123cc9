"""Hairstyle try-on on Replicate: one prediction per requested view, awaited by polling, woken early by
Replicate's webhook (services/generation.receive_webhook); outputs are copied from Replicate's temporary
URLs into our storage by the runner."""

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
from app.services.engines.replicate_inputs import input_url

VIEW_PROMPTS = {
    "front": "front view, facing the camera",
    "left": "left side profile view",
    "right": "right side profile view",
    "back": "view from behind, showing the back of the head",
}


class Hairstyle(Engine):
    kind = JobKind.generate

    def options(self, requested: dict[str, Any]) -> dict[str, Any]:
        """`requested`: {"style_id", "prompt", "views", "image_url"}; each view is made (and paid) once."""
        return {**requested, "views": list(dict.fromkeys(requested.get("views") or ["front"]))}

    def cost(self, ctx: Container, options: dict[str, Any]) -> int:
        return to_millicredits(ctx.settings.generate_cost_credits) * len(options.get("views") or ["front"])

    def usage_action(self, options: dict[str, Any]) -> UsageAction:
        return UsageAction.generate

    def provider(self, ctx: Container) -> str:
        return "replicate"

    def retention_hours(self, ctx: Container) -> int:
        return ctx.settings.retention_hours_generate

    def output_names(self, options: dict[str, Any]) -> list[tuple[str, str]]:
        # Generated views come in whatever image type the provider returned.
        extensions = sorted(set(IMAGE_EXTENSIONS.values()) | {"bin"})
        views = options.get("views") or ["front"]
        return [(str(view), extension) for view in views for extension in extensions]

    async def execute(self, ctx: Container, work: JobWork) -> list[JobOutput]:
        """Run every view, one prediction each."""
        client = replicate_client(ctx)
        settings = ctx.settings
        options = work.options
        # A client's own image URL is theirs to make reachable; ours goes through the Files API unless
        # storage gives a public https URL.
        image_url = options.get("image_url") or await input_url(ctx, client, work)
        webhook = webhook_url(settings)
        outputs = []
        for view in options.get("views", ["front"]):
            prompt = (
                f"Give this person {options['prompt']}; {VIEW_PROMPTS[view]};"
                " photorealistic, same face and lighting."
            )
            prediction = await client.create_prediction(
                settings.replicate_model,
                {"prompt": prompt, "image_input": [image_url], "max_images": 1, "size": "2K"},
                webhook_url=webhook,
                idempotency_key=f"{work.job_id}:{view}",
            )
            await record_prediction(ctx, work.job_id, view, prediction.id)
            done = await await_prediction(ctx, client, prediction.id)
            if done.status != "succeeded" or not done.output_urls:
                raise EngineError(
                    "generation_failed", done.error or f"The prediction ended {done.status}.", retryable=False
                )
            data, content_type = await client.download(
                done.output_urls[0], settings.replicate_download_max_bytes
            )
            outputs.append(JobOutput.image(data, content_type, view))
        return outputs

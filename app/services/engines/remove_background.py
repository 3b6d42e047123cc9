"""Background removal: the local u2netp model, or ClipDrop when settings choose it (the container's
`background_remover`)."""

from __future__ import annotations

import asyncio
from typing import Any

from app.container import Container
from app.integrations.images.base import fit_pixels
from app.models import JobKind, UsageAction
from app.services.credits import to_millicredits
from app.services.engines.base import Engine, JobOutput, JobWork


class RemoveBackground(Engine):
    kind = JobKind.remove_background

    def cost(self, ctx: Container, options: dict[str, Any]) -> int:
        return to_millicredits(ctx.settings.remove_background_cost_credits)

    def usage_action(self, options: dict[str, Any]) -> UsageAction:
        return UsageAction.remove_background

    def provider(self, ctx: Container) -> str:
        return ctx.background_remover.name

    def runs_here(self, ctx: Container) -> bool:
        return ctx.removes_backgrounds_here

    def retention_hours(self, ctx: Container) -> int:
        return ctx.settings.retention_hours_remove_background

    def max_pixels(self, ctx: Container) -> int | None:
        """The provider's input limit (ClipDrop's 25 MP): a bigger input is scaled down to it first."""
        return ctx.background_remover.max_input_pixels

    async def execute(self, ctx: Container, work: JobWork) -> list[JobOutput]:
        source = await work.input(ctx)
        limit = self.max_pixels(ctx)
        if limit is not None:
            source = await asyncio.to_thread(fit_pixels, source, limit)
        return [JobOutput(await ctx.background_remover.remove_background(source), "image/png", "png")]

"""Vectorization (vtracer, local): `preview` is cheaper because it is coarser, `full` is the product."""

from __future__ import annotations

from typing import Any

from app.container import Container
from app.integrations.images.base import VectorizeOptions
from app.models import JobKind, UsageAction
from app.services.credits import to_millicredits
from app.services.engines.base import Engine, JobOutput, JobWork

# What a preview may be at most, whatever the client asks: half the input's resolution and at most
# 512 px, fewer colours, more speckle removed and coarser colour layers than the full product (vtracer's
# own defaults, at the input's resolution up to 2048 px).
PREVIEW_MAX_SIDE = 512
PREVIEW_DOWNSCALE = 2
FULL_MAX_SIDE = 2048
PREVIEW_MAX_COLOR_PRECISION = 4
PREVIEW_MIN_FILTER_SPECKLE = 8
PREVIEW_MIN_LAYER_DIFFERENCE = 32


def engine_options(mode: str, requested: dict[str, Any]) -> dict[str, Any]:
    """vtracer's settings for a request. The client's options are clamped to the preview's limits (they
    can make a preview coarser still, never finer), so no option set turns a preview into the full
    product."""
    engine: dict[str, Any] = {
        "colormode": requested.get("colormode") or "color",
        "mode": requested.get("mode") or "spline",
    }
    color_precision = requested.get("color_precision")
    filter_speckle = requested.get("filter_speckle")
    layer_difference = requested.get("layer_difference")
    if mode != "preview":
        engine["color_precision"] = color_precision or 6
        engine["filter_speckle"] = filter_speckle if filter_speckle is not None else 4
        engine["layer_difference"] = layer_difference or 16
        engine["max_side"] = FULL_MAX_SIDE
        return engine
    preview_precision = PREVIEW_MAX_COLOR_PRECISION
    engine["color_precision"] = min(color_precision or preview_precision, preview_precision)
    engine["filter_speckle"] = max(filter_speckle or 0, PREVIEW_MIN_FILTER_SPECKLE)
    engine["layer_difference"] = max(layer_difference or 0, PREVIEW_MIN_LAYER_DIFFERENCE)
    engine["max_side"] = PREVIEW_MAX_SIDE
    # However small the input, the preview traces a smaller copy: on a flat logo the clamps alone may
    # change nothing, and the preview would be the full product.
    engine["downscale"] = PREVIEW_DOWNSCALE
    return engine


class Vectorize(Engine):
    kind = JobKind.vectorize
    input_formats = frozenset({"PNG", "JPEG"})

    def options(self, requested: dict[str, Any]) -> dict[str, Any]:
        """`requested`: {"mode": "preview" | "full", "options": the client's vtracer options}."""
        mode = requested.get("mode") or "full"
        return {"mode": mode, "engine": engine_options(mode, requested.get("options") or {})}

    def cost(self, ctx: Container, options: dict[str, Any]) -> int:
        settings = ctx.settings
        preview = options.get("mode") == "preview"
        price = settings.vectorize_preview_cost_credits if preview else settings.vectorize_full_cost_credits
        return to_millicredits(price)

    def usage_action(self, options: dict[str, Any]) -> UsageAction:
        return (
            UsageAction.vectorize_preview if options.get("mode") == "preview" else UsageAction.vectorize_full
        )

    def provider(self, ctx: Container) -> str:
        return ctx.vectorizer.name

    def runs_here(self, ctx: Container) -> bool:
        return True

    def retention_hours(self, ctx: Container) -> int:
        return ctx.settings.retention_hours_vectorize

    def output_names(self, options: dict[str, Any]) -> list[tuple[str, str]]:
        return [("main", "svg")]

    async def execute(self, ctx: Container, work: JobWork) -> list[JobOutput]:
        svg = await ctx.vectorizer.vectorize(
            await work.input(ctx), VectorizeOptions(**work.options.get("engine", {}))
        )
        return [JobOutput(svg.encode(), "image/svg+xml", "svg")]

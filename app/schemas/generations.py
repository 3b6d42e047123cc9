from __future__ import annotations

import uuid
from typing import Literal

from pydantic import ConfigDict, Field

from app.schemas.base import Schema

AspectRatio = Literal["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]


class GenerationIn(Schema):
    """Text to image. The fixed bounds are here; GENERATION_PROMPT_MAX_CHARS and
    GENERATION_MAX_OUTPUTS may tighten them (422 `invalid_generation`)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=10_000, examples=["me as an astronaut on the moon"])
    model_id: uuid.UUID | None = Field(
        default=None, description="One of your ready personal models; without it, the default model."
    )
    enhance_prompt: bool = Field(default=False, description="Have the LLM rewrite the prompt first.")
    negative_prompt: str | None = Field(
        default=None,
        max_length=10_000,
        description="Sent only to a model that takes one (Flux models do not).",
    )
    aspect_ratio: AspectRatio = "1:1"
    num_outputs: int = Field(default=1, ge=1, le=4, description="Images to make; each is charged.")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    guidance: float | None = Field(
        default=None,
        ge=0,
        le=10,
        allow_inf_nan=False,
        description="Sent to personal models (guidance_scale) and to a default model that takes it.",
    )

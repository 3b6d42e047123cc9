"""Text to image (POST /generations): a prompt, optionally rewritten by the LLM first, run on the user's
personal model (its trained version, with its trigger word woven into the prompt) or on the default
model. Checked, then submitted like any job (the engine is app/services/engines/text_to_image.py):
charged per output image, counted by the plan's daily generation quota.

A request is prepared before its submission: the checks that need no lock and the prompt enhancement,
which may take seconds and gives the request's connection back meanwhile (so it must run before an
Idempotency-Key is claimed in the request's transaction). The submission then locks the account,
checks the quota and the model again and reserves the credits, in one transaction."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.errors import AppError, Conflict, NotFound
from app.integrations.llm import TextModel
from app.models import CloneModel, CloneModelStatus, Job, JobKind, User
from app.repositories.clones import CloneModelRepository
from app.services import job_submission
from app.services import users as users_service
from app.services.auth import rate_limit
from app.services.clones import prompts, quotas
from app.services.engines import engine_for
from app.services.engines.predictions import replicate_client

# Flux's aspect ratios (the default model's and personal models' alike; providers.md §2).
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 10.0
SEED_MAX = 2**31 - 1
MAX_OUTPUTS = 4
# Personal models run cog-flux's LoRA predictor: its guidance input is `guidance_scale`.
LORA_GUIDANCE_INPUT = "guidance_scale"


class InvalidGeneration(AppError):
    """A field within the schema's bounds but past this server's settings."""

    status_code = 422
    code = "invalid_generation"


class ModelNotReady(Conflict):
    code = "model_not_ready"


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    model_id: uuid.UUID | None = None
    enhance_prompt: bool = False
    negative_prompt: str | None = None
    aspect_ratio: str = "1:1"
    num_outputs: int = 1
    seed: int | None = None
    guidance: float | None = None


@dataclass(frozen=True)
class Prepared:
    """A checked request: the prompt as received (cleaned) and, when asked for, the LLM's rewrite."""

    request: GenerationRequest
    prompt: str
    negative_prompt: str | None
    enhanced_prompt: str | None


async def usable_model(session: AsyncSession, user: User, model_id: uuid.UUID) -> CloneModel:
    """The user's model, trained and ready: anyone else's id is not found, an unfinished one a 409."""
    model = await CloneModelRepository(session).get_for_user(model_id, user.id)
    if model is None:
        raise NotFound("No such model.")
    if model.status != CloneModelStatus.ready.value or not model.provider_model or not model.provider_version:
        raise ModelNotReady(f"The model is {model.status}; it can generate once its training succeeded.")
    return model


def _check_settings(settings: Settings, request: GenerationRequest) -> tuple[str, str | None]:
    """The prompt and negative prompt cleaned (no control characters, whitespace collapsed), within the
    settings' bounds (the schema holds the fixed ones)."""
    if request.num_outputs > settings.generation_max_outputs:
        raise InvalidGeneration(
            f"At most {settings.generation_max_outputs} images may be asked for at once.",
            extra={"field": "num_outputs", "max": settings.generation_max_outputs},
        )
    limit = settings.generation_prompt_max_chars
    for name, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
        if text is not None and len(text) > limit:
            raise InvalidGeneration(
                f"The {name} is longer than {limit} characters.", extra={"field": name, "max": limit}
            )
    prompt = prompts.clean_text(request.prompt, limit)
    if not prompt:
        raise prompts.InvalidPrompt()
    negative = prompts.clean_text(request.negative_prompt, limit) if request.negative_prompt else None
    return prompt, negative or None


async def prepare(
    session: AsyncSession,
    ctx: Container,
    user: User,
    request: GenerationRequest,
    text_model: TextModel | None,
) -> Prepared:
    """Everything that may refuse the request before anything is reserved, cheapest first; then the
    enhancement (free, and only once nothing else refuses). The quota is looked at here so a request
    past it spends no LLM call; the submission checks it again under the account's lock."""
    replicate_client(ctx)
    settings = ctx.settings
    prompt, negative = _check_settings(settings, request)
    quotas.require_outputs(settings, user, request.num_outputs)
    await rate_limit(ctx, settings.rate_limit_generation_per_user, "generation", "user", str(user.id))
    if request.model_id is not None:
        await usable_model(session, user, request.model_id)
    await quotas.require(session, settings, user, quotas.QuotaName.generations)
    enhanced = None
    if request.enhance_prompt:
        enhanced = (await prompts.enhance(session, settings, text_model, prompt, None)).enhanced
    return Prepared(request, prompt, negative, enhanced)


def weave_trigger_word(prompt: str, trigger_word: str) -> str:
    """The prompt naming the model's trigger word: as written if it does already (as a word, in any
    case), else with it put in front."""
    if re.search(rf"(?<!\w){re.escape(trigger_word)}(?!\w)", prompt, flags=re.IGNORECASE):
        return prompt
    return f"{trigger_word}, {prompt}"


def model_input(
    settings: Settings, prepared: Prepared, model: CloneModel | None
) -> tuple[str, str, dict[str, Any]]:
    """(model reference, prompt sent, the prediction's input) for the default model or a personal one."""
    request = prepared.request
    prompt = prepared.enhanced_prompt or prepared.prompt
    guidance_input = settings.text_to_image_guidance_input
    negative_input = settings.text_to_image_negative_prompt_input
    reference = settings.text_to_image_model
    extra: dict[str, Any] = {}
    if model is not None:
        assert model.provider_model is not None
        assert model.provider_version is not None
        prompt = weave_trigger_word(prompt, model.trigger_word)
        # The version may be stored bare (64 hex) or as Replicate's `owner/name:<hex>`.
        reference = f"{model.provider_model}:{model.provider_version.rpartition(':')[2]}"
        guidance_input, negative_input = LORA_GUIDANCE_INPUT, None
        extra["lora_scale"] = settings.generation_lora_scale
    payload: dict[str, Any] = {
        "prompt": prompt,
        "aspect_ratio": request.aspect_ratio,
        "num_outputs": request.num_outputs,
        "output_format": settings.generation_output_format,
        **extra,
    }
    if request.seed is not None:
        payload["seed"] = request.seed
    if request.guidance is not None and guidance_input:
        payload[guidance_input] = request.guidance
    if prepared.negative_prompt and negative_input:
        payload[negative_input] = prepared.negative_prompt
    return reference, prompt, payload


async def submit(session: AsyncSession, ctx: Container, user: User, prepared: Prepared) -> Job:
    """Lock the account, check the quota and the model again (either may have changed since the request
    was prepared), and submit the job with its reservation."""
    settings = ctx.settings
    await users_service.lock_open(session, user.id)
    await quotas.require(session, settings, user, quotas.QuotaName.generations)
    request = prepared.request
    model = await usable_model(session, user, request.model_id) if request.model_id else None
    reference, sent_prompt, payload = model_input(settings, prepared, model)
    options = engine_for(JobKind.generation).options(
        {
            "prompt": prepared.prompt,
            "enhanced_prompt": prepared.enhanced_prompt,
            "negative_prompt": prepared.negative_prompt,
            "model_id": str(model.id) if model is not None else None,
            "provider_model": reference,
            "provider_prompt": sent_prompt,
            "num_outputs": request.num_outputs,
            "input": payload,
        }
    )
    return await job_submission.submit(session, ctx, user.id, JobKind.generation, None, options)

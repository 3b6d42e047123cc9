"""What a personal model's training needs from Replicate before it starts (app/services/clones/training.py):
the client, the user's destination model (made when missing), the trainer's input and the photos' zip."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from collections.abc import Mapping
from typing import Any

from app.config import Settings
from app.container import Container
from app.errors import AppError, ProviderNotConfigured
from app.integrations.images.base import IMAGE_EXTENSIONS, EngineError, ReplicateApi


class TooManySteps(AppError):
    status_code = 422
    code = "too_many_steps"


def trainer(ctx: Container) -> ReplicateApi:
    if ctx.replicate is None or not ctx.settings.clone_replicate_owner:
        raise ProviderNotConfigured(
            "Model training is not configured on this server (REPLICATE_API_TOKEN, CLONE_REPLICATE_OWNER)."
        )
    return ctx.replicate


def destination_for(settings: Settings, user_id: uuid.UUID) -> str:
    """The user's model on Replicate (one per user; each training adds a version to it). Names stay
    unique forever: Replicate refuses a name once used, even after the model is deleted."""
    return f"{settings.clone_replicate_owner}/{settings.clone_model_name_prefix}-{user_id.hex}"


def training_input(settings: Settings, trigger_word: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer's input without `input_images` (added once the zip is uploaded)."""
    steps = options.get("steps") or settings.clone_training_default_steps
    if steps > settings.clone_training_max_steps:
        raise TooManySteps(f"A training takes at most {settings.clone_training_max_steps} steps.")
    chosen = {
        key: options[key]
        for key in ("lora_rank", "learning_rate", "autocaption")
        if options.get(key) is not None
    }
    return {"trigger_word": trigger_word, "steps": steps, **chosen}


async def zip_photos(ctx: Container, photos: list[tuple[str, str]]) -> bytes:
    """One zip of the photos' stored bytes, named photo-01.jpg, photo-02.png, ... (stored, not deflated:
    they are compressed images already)."""
    contents = [(await ctx.storage.get(key), content_type) for key, content_type in photos]

    def pack() -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for index, (data, content_type) in enumerate(contents, start=1):
                archive.writestr(f"photo-{index:02d}.{IMAGE_EXTENSIONS.get(content_type, 'bin')}", data)
        return buffer.getvalue()

    return await asyncio.to_thread(pack)


async def ensure_destination(client: ReplicateApi, settings: Settings, destination: str) -> None:
    owner, _, name = destination.partition("/")
    if await client.get_model(owner, name) is not None:
        return
    try:
        await client.create_model(
            owner,
            name,
            visibility=settings.clone_model_visibility,
            hardware=settings.clone_model_hardware,
            description="Personal models trained by Pixforge",
        )
    except EngineError as exc:
        if exc.code != "provider_conflict":  # created meanwhile by a concurrent start: fine
            raise

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ConfigDict, Field

from app.schemas.base import Schema
from app.schemas.users import Credits


class PhotoOut(Schema):
    id: uuid.UUID
    url: str
    content_type: str
    width: int
    height: int
    size: int
    created_at: datetime


class PhotosOut(Schema):
    items: list[PhotoOut]


class PhotoPageOut(Schema):
    items: list[PhotoOut]
    next_cursor: str | None


class EnhanceIn(Schema):
    prompt: str = Field(min_length=1, max_length=2000, examples=["me as an astronaut on the moon"])
    style: str | None = Field(default=None, max_length=100, examples=["cinematic"])


class EnhancedOut(Schema):
    original: str
    enhanced: str


class QuotaOut(Schema):
    name: str
    period: str
    used: int
    total: int | None
    remaining: int | None
    resets_at: datetime | None


class QuotasOut(Schema):
    plan: str
    quotas: list[QuotaOut]


# --- personal models ---------------------------------------------------------------------------------


class TrainingOptionsIn(Schema):
    """The trainer's knobs a client may turn (ostris/flux-dev-lora-trainer); the rest keep its defaults."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(
        default=None, ge=3, le=6000, description="Training steps (capped by the server)."
    )
    lora_rank: int | None = Field(default=None, ge=1, le=128)
    learning_rate: float | None = Field(default=None, gt=0, le=0.01)
    autocaption: bool | None = None


class CloneModelIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, examples=["Me, summer 2026"])
    trigger_word: str = Field(
        pattern=r"^[A-Za-z0-9]{2,50}$",
        examples=["ZQXPRSN"],
        description="2-50 letters or digits, unique among your models; put it in prompts to summon you.",
    )
    photo_ids: list[uuid.UUID] = Field(min_length=1, max_length=500)
    options: TrainingOptionsIn | None = None


class CloneModelOut(Schema):
    id: uuid.UUID
    name: str
    trigger_word: str
    status: str = Field(description="training | ready | failed | canceled")
    version: str | None = Field(description="The trained Replicate version (owner/name:<hash>), once ready.")
    error: str | None = Field(description="Why the training failed, as the provider said.")
    logs_url: str | None
    credits: Credits = Field(description="Credits held by the training; spent only if it succeeds.")
    photo_ids: list[uuid.UUID]
    created_at: datetime
    finished_at: datetime | None


class CloneModelPageOut(Schema):
    items: list[CloneModelOut]
    next_cursor: str | None

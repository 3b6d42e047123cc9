from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyUrl, Field, UrlConstraints

from app.schemas.base import Schema
from app.schemas.users import Credits

# Replicate fetches the image itself: only public https URLs make sense, never file: or http: ones.
HttpsUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["https"], max_length=2048)]


class UploadOut(Schema):
    id: uuid.UUID
    url: str
    content_type: str
    width: int
    height: int
    size: int


class RemovedBackgroundOut(Schema):
    """The seed app's shape: the PNG inline, plus the credits left."""

    image_id: uuid.UUID
    image_base64: str
    content_type: str
    credits: Credits


class JobOutputOut(Schema):
    view: str
    url: str
    content_type: str


class ImageOut(Schema):
    """A gallery item: an AI job (its kind) or an image uploaded on its own (kind `upload`, COMPLETED,
    the image itself as its one output)."""

    id: uuid.UUID
    kind: str
    status: str
    outputs: list[JobOutputOut]
    input_url: str | None
    credits: Credits = Field(description="Credits reserved (and, once completed, spent) for this job.")
    error: str | None
    error_code: str | None
    attempts: int
    time_taken: float | None = Field(description="Seconds.")
    is_favourite: bool
    description: str | None
    created_at: datetime
    finished_at: datetime | None
    width: int | None = Field(default=None, description="Uploads only: pixels.")
    height: int | None = Field(default=None, description="Uploads only: pixels.")
    size: int | None = Field(default=None, description="Uploads only: bytes.")
    prompt: str | None = Field(default=None, description="Generations only: the prompt as sent.")
    enhanced_prompt: str | None = Field(
        default=None, description="Generations only: the LLM's rewrite, when one was asked for."
    )
    model_id: uuid.UUID | None = Field(
        default=None, description="Generations only: the personal model used (null: the default one)."
    )


class JobAcceptedOut(Schema):
    image_id: uuid.UUID
    status: str
    message: str = "Accepted; poll the status URL or listen to the events stream."
    status_url: str


class VectorizeOptionsIn(Schema):
    colormode: Literal["color", "binary"] = "color"
    color_precision: int | None = Field(default=None, ge=1, le=8)
    filter_speckle: int | None = Field(default=None, ge=0, le=128)
    layer_difference: int | None = Field(default=None, ge=1, le=255)
    mode: Literal["spline", "polygon", "none"] = "spline"


class VectorizeIn(Schema):
    upload_id: uuid.UUID | None = None
    mode: Literal["preview", "full"] = "full"
    options: VectorizeOptionsIn = Field(default_factory=VectorizeOptionsIn)


class VectorizedOut(Schema):
    image_id: uuid.UUID
    mode: str
    svg: str
    url: str
    credits: Credits


class ImageUpdateIn(Schema):
    is_favourite: bool = False
    description: str | None = Field(default=None, max_length=500)


class ImagePageOut(Schema):
    items: list[ImageOut]
    next_cursor: str | None


class StyleOut(Schema):
    id: uuid.UUID
    name: str
    description: str | None
    thumbnail_url: str | None
    category: str


class StyleCategoryOut(Schema):
    name: str
    styles: int = Field(description="Active styles in it.")


View = Literal["front", "left", "right", "back"]


def _front_only() -> list[View]:
    return ["front"]


class GenerateIn(Schema):
    style_id: uuid.UUID
    upload_id: uuid.UUID | None = None
    image_input_url: HttpsUrl | None = None
    views: list[View] = Field(default_factory=_front_only, min_length=1, max_length=4)


class GenerateAcceptedOut(Schema):
    image_id: uuid.UUID
    message: str = "Generation started; poll image/status/{image_id} or listen to images/{image_id}/events."

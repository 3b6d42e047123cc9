"""The Hair Try-On SPA's image, upload and payment shapes, as its source reads them (frontend/src/api/
schema.ts of kevinnadar22/hairtryon). Ids are our UUIDs: the SPA passes them through untouched."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyUrl, Field, UrlConstraints

from app.schemas.base import Schema

# Our own file links may be plain http on a development server; anything else must be https (checked
# by the route, which knows which links are ours).
InputUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["http", "https"], max_length=2048)]
LowercaseStatus = Literal["pending", "processing", "completed", "failed"]


class HairTryOnStyleOut(Schema):
    id: uuid.UUID
    name: str
    category: str
    image_url: str


class PresignOut(Schema):
    upload_url: str
    fields: dict[str, str]
    file_url: str
    key: str


class HairTryOnGenerateIn(Schema):
    image_input_url: InputUrl
    style_id: uuid.UUID


class ViewGenerateIn(Schema):
    image_id: uuid.UUID


class ImageIdOut(Schema):
    image_id: uuid.UUID
    message: str = "Image generation started successfully."


class ImageStatusOut(Schema):
    id: uuid.UUID
    status: LowercaseStatus
    output_image_url: str | None
    description: str | None
    right_view_url: str | None
    left_view_url: str | None
    back_view_url: str | None


class SideViewsOut(Schema):
    right_view_url: str
    left_view_url: str
    back_view_url: str


class UserImageOut(Schema):
    id: uuid.UUID
    input_image_url: str | None
    output_image_url: str | None
    description: str | None
    style_name: str
    side_views: SideViewsOut | None
    status: LowercaseStatus
    created_at: datetime
    time_taken: float | None
    is_favourite: bool


class UserImagesOut(Schema):
    images: list[UserImageOut]
    # The page asked for: 1, or the opaque `next_page` of the page before, which the SPA echoes as is.
    page: int | str
    limit: int
    next_page: str | None
    total_images: int


class CheckoutIn(Schema):
    quantity: int = Field(ge=1)


class CheckoutOut(Schema):
    session_id: str
    checkout_url: str


PaymentStatus = Literal["succeeded", "failed", "processing"]


class TransactionOut(Schema):
    id: uuid.UUID
    session_id: str | None
    payment_id: str | None
    amount: float  # major units of `currency` (rupees, dollars), as the SPA shows it
    currency: str
    status: PaymentStatus
    quantity: int  # credits
    created_at: datetime

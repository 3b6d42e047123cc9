"""The Pure Pic React client's shapes (seed-clients.md §2): its `{success, data, statusCode}` envelope,
its camelCase user, and the Razorpay order object it hands to Razorpay Checkout."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import ConfigDict, Field, HttpUrl
from pydantic.alias_generators import to_camel

from app.schemas.base import Schema

DataT = TypeVar("DataT")


class CamelSchema(Schema):
    """camelCase on the wire both ways, also when a schema is dumped outside FastAPI's response model
    (the Idempotency-Key store keeps `model_dump` output)."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


class PurePicEnvelope(CamelSchema, Generic[DataT]):
    """The original Spring server's RemoveBgResponse; the client reads `success` and `data`. Errors
    keep Pixforge's error body (the client shows the same toast for any failure)."""

    success: Literal[True] = True
    data: DataT
    status_code: Literal["OK"] = "OK"


class PurePicUserIn(CamelSchema):
    """What UserSyncHandler.jsx:35-44 posts, read from the Clerk session's user. Only the display name
    and the photo are taken: the address here is not proven by the token (it stays what Clerk's webhook
    or a verified sign-in set), and role or credits are never the client's to set."""

    clerk_id: str = Field(min_length=1, max_length=64)
    email: str | None = Field(default=None, max_length=320)
    username: str | None = Field(default=None, max_length=64)
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    photo_url: HttpUrl | None = Field(default=None, max_length=2048)


class PurePicUserOut(CamelSchema):
    clerk_id: str
    email: str | None
    username: str | None
    first_name: str | None
    last_name: str | None
    photo_url: str | None
    credits: int = Field(description="Whole spendable credits (the client counts in whole credits).")


class PurePicCreditsOut(CamelSchema):
    credits: int = Field(description="Whole spendable credits (the client counts in whole credits).")


class PurePicOrderOut(Schema):
    """Razorpay's order object as the original server passed it on (RazorpayOrderDto); the client gives
    `id`, `amount`, `currency` and `receipt` to Razorpay Checkout (OrderService.js:23-35)."""

    id: str = Field(description="The Razorpay order id (order_...).")
    entity: Literal["order"] = "order"
    amount: int = Field(description="Minor units (paise).")
    currency: str
    receipt: str = Field(description="Pixforge's order id, hex: the receipt Razorpay holds.")
    status: Literal["created"] = "created"
    created_at: int = Field(description="Unix seconds.")

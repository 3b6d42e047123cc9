"""Shapes of the admin API and of a user's own activity."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from app.schemas.base import Schema
from app.schemas.users import Credits


class AuditLogOut(Schema):
    id: uuid.UUID
    action: str
    actor_id: uuid.UUID | None
    subject_id: uuid.UUID | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]
    created_at: datetime


class AuditLogPageOut(Schema):
    items: list[AuditLogOut]
    next_cursor: str | None


class AdminUserOut(Schema):
    id: uuid.UUID
    email: str | None
    name: str | None
    plan: str
    role: str
    banned: bool
    email_verified: bool
    created_at: datetime
    last_login_at: datetime | None
    credits: Credits
    reserved: Credits


class AdminUserPageOut(Schema):
    items: list[AdminUserOut]
    next_cursor: str | None


class BanIn(Schema):
    reason: str | None = Field(default=None, max_length=200, description="Why; kept in the audit trail.")


ThumbnailUrl = Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")]
StyleCategory = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="The catalogue tab, a lowercase slug (the Hair Try-On client shows standard, celebrity).",
    ),
]


class StyleAdminOut(Schema):
    id: uuid.UUID
    name: str
    description: str | None
    prompt: str
    thumbnail_url: str | None
    category: str
    is_active: bool
    sort_order: int
    created_at: datetime
    updated_at: datetime


class StyleCreateIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    prompt: str = Field(min_length=1, max_length=2000, description="What the model is asked for.")
    thumbnail_url: ThumbnailUrl | None = None
    category: StyleCategory = "standard"
    is_active: bool = True
    sort_order: int = Field(default=0, ge=-1_000_000, le=1_000_000)


class StyleUpdateIn(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    prompt: str | None = Field(default=None, min_length=1, max_length=2000)
    thumbnail_url: ThumbnailUrl | None = None
    category: StyleCategory | None = None
    is_active: bool | None = None
    sort_order: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)

    @model_validator(mode="after")
    def _required_fields_are_not_null(self) -> StyleUpdateIn:
        for name in ("name", "prompt", "category", "is_active", "sort_order"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class WebhookEventOut(Schema):
    """A stored provider event (its body stays in the database: it carries customers' details)."""

    id: uuid.UUID
    provider: str
    event_id: str
    event_type: str
    status: str
    error: str | None
    received_at: datetime
    handled_at: datetime | None


class WebhookEventPageOut(Schema):
    items: list[WebhookEventOut]
    next_cursor: str | None


# --- plans and prices ------------------------------------------------------------------------------

PlanCode = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,49}$", description="lowercase slug")]
PlanCredits = Annotated[
    Decimal,
    Field(
        max_digits=11,
        decimal_places=3,
        gt=0,
        le=10_000_000,
        allow_inf_nan=False,
        description="Credits per purchase (packs) or per period (subscriptions), up to 3 decimals.",
    ),
]
MAX_PRICES = 20


class PriceIn(Schema):
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, upper case")
    amount: int = Field(ge=1, le=100_000_000_000, description="Minor units (cents, paise).")


def _one_price_per_currency(prices: list[PriceIn] | None) -> list[PriceIn] | None:
    if prices is not None and len({price.currency for price in prices}) != len(prices):
        raise ValueError("one price per currency")
    return prices


class PriceAdminOut(Schema):
    currency: str
    amount: int


class PlanAdminOut(Schema):
    id: uuid.UUID
    code: str
    name: str
    description: str | None
    kind: str
    credits: Credits
    grants_plan: str | None
    interval: str | None
    dodo_product_id: str | None
    is_active: bool
    sort_order: int
    prices: list[PriceAdminOut]
    created_at: datetime
    updated_at: datetime


class PlanCreateIn(Schema):
    code: PlanCode
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    kind: Literal["credit_pack", "subscription"]
    credits: PlanCredits
    grants_plan: str | None = Field(
        default=None, pattern=r"^[a-z0-9_-]{1,32}$", description="The plan a subscriber is on (e.g. pro)."
    )
    interval: Literal["month", "year"] | None = Field(default=None, description="Subscriptions only.")
    dodo_product_id: str | None = Field(default=None, min_length=1, max_length=100)
    is_active: bool = True
    sort_order: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    prices: list[PriceIn] = Field(default_factory=list, max_length=MAX_PRICES)

    _prices = field_validator("prices")(_one_price_per_currency)


class PlanUpdateIn(Schema):
    # The code and the kind cannot change (frontends and past orders name them): sending them is refused
    # rather than silently ignored.
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    credits: PlanCredits | None = None
    grants_plan: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,32}$")
    interval: Literal["month", "year"] | None = None
    dodo_product_id: str | None = Field(default=None, min_length=1, max_length=100)
    is_active: bool | None = None
    sort_order: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    prices: list[PriceIn] | None = Field(
        default=None, max_length=MAX_PRICES, description="Replaces every price of the plan."
    )

    _prices = field_validator("prices")(_one_price_per_currency)

    @model_validator(mode="after")
    def _required_fields_are_not_null(self) -> PlanUpdateIn:
        for name in ("name", "credits", "is_active", "sort_order", "prices"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

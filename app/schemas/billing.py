from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.schemas.base import Schema
from app.schemas.users import Credits

# A custom amount of credits above this is invalid (422), whatever DODO_MAX_CUSTOM_CREDITS allows.
MAX_CUSTOM_CREDITS = 1_000_000_000
Currency = Field(default="USD", pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code.")


class PriceOut(Schema):
    currency: str
    amount: int = Field(description="Minor units (cents, paise).")
    providers: list[str]


class PlanOut(Schema):
    id: uuid.UUID
    code: str
    name: str
    description: str | None
    kind: str
    credits: Credits
    interval: str | None
    prices: list[PriceOut]


class CreateOrderIn(Schema):
    plan_id: str = Field(min_length=1, max_length=64, description="Plan id or code.")


class RazorpayOrderOut(Schema):
    order_id: uuid.UUID
    key_id: str
    razorpay_order_id: str
    amount: int
    currency: str
    credits: Credits


class VerifyOrderIn(Schema):
    razorpay_order_id: str = Field(min_length=1, max_length=64)
    razorpay_payment_id: str = Field(min_length=1, max_length=64)
    razorpay_signature: str = Field(min_length=1, max_length=128)


class CheckoutIn(Schema):
    provider: Literal["stripe", "dodo"] = "stripe"
    plan_id: str | None = Field(default=None, min_length=1, max_length=64)
    credits: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CUSTOM_CREDITS,
        description="Dodo only: buy this many credits instead of a plan (the server's bounds apply).",
    )
    currency: str = Currency


class SubscribeIn(Schema):
    plan_id: str = Field(min_length=1, max_length=64)
    currency: str = Currency


class CheckoutOut(Schema):
    order_id: uuid.UUID
    provider: str
    checkout_url: str
    session_id: str


class OrderOut(Schema):
    id: uuid.UUID
    provider: str
    plan_id: uuid.UUID | None
    kind: str
    status: str
    credits: Credits
    amount: int
    currency: str
    provider_order_id: str | None
    provider_payment_id: str | None
    refunded_amount: int
    billing_country: str | None
    customer_tax_ids: list[dict[str, Any]] | None
    tax_amount: int | None
    created_at: datetime
    paid_at: datetime | None


class OrderVerifiedOut(Schema):
    success: bool
    order: OrderOut
    credits: Credits = Field(description="Balance after the purchase.")


class BillingDetailsIn(Schema):
    """The buyer printed on the tax invoices of later payments. Every field replaces the stored one."""

    name: str | None = Field(default=None, max_length=200, description="Person or company name.")
    country: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2}$",
        description="ISO 3166 alpha-2; defaults to the VAT number's country.",
    )
    vat_number: str | None = Field(
        default=None,
        max_length=40,
        description="EU VAT number with its country prefix (e.g. DE123456789); checked for format.",
    )


class BillingDetailsOut(Schema):
    name: str | None
    country: str | None
    vat_number: str | None = Field(description="Compact form (no spaces or dots).")
    vat_verified: bool = Field(description="VIES confirmed the VAT number (only when checks are on).")

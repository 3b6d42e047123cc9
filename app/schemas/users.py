from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, HttpUrl, PlainSerializer

from app.schemas.base import Schema

# Credits travel as JSON numbers (10.0, 0.2), exact to the thousandth the ledger keeps.
Credits = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


class UserOut(Schema):
    id: uuid.UUID
    email: str | None
    name: str | None
    username: str | None
    photo_url: str | None
    email_verified: bool
    plan: str
    role: str
    created_at: datetime


class UserUpdateIn(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    username: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{3,64}$")
    photo_url: HttpUrl | None = Field(default=None, max_length=2048)


class CreditsOut(Schema):
    credits: Credits = Field(description="Spendable credits (3 decimals).")
    plan: str


class ApiKeyIn(Schema):
    name: str = Field(min_length=1, max_length=100)


class ApiKeyOut(Schema):
    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The secret. Shown this once; store it now.")


class LedgerEntryOut(Schema):
    id: uuid.UUID
    amount: Credits
    reason: str
    reference: str | None
    balance_after: Credits
    created_at: datetime


class LedgerPageOut(Schema):
    items: list[LedgerEntryOut]
    next_cursor: str | None


class AccountExportOut(Schema):
    user: dict[str, Any]
    credits: dict[str, Any]
    ledger: list[LedgerEntryOut]
    api_keys: list[ApiKeyOut]
    emails: list[dict[str, Any]]
    design_systems: list[dict[str, Any]] = []
    exported_at: datetime

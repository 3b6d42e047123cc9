"""POST /admin/users/{id}/credits: grant or take credits."""

from __future__ import annotations

import uuid
from decimal import Decimal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from app.dependencies import AdminUser, IdempotentDep, SessionDep
from app.routers.users import ledger_entry_out
from app.schemas.base import Schema
from app.schemas.errors import error_responses
from app.schemas.users import LedgerEntryOut
from app.services import admin as admin_service
from app.services import credits

router = APIRouter()


MAX_ADJUSTMENT_CREDITS = 10_000_000


class CreditAdjustmentIn(Schema):
    # Digits and places are checked before any arithmetic: "1E+999999999999999999" would overflow it.
    amount: Decimal = Field(
        max_digits=11,
        decimal_places=3,
        ge=-MAX_ADJUSTMENT_CREDITS,
        le=MAX_ADJUSTMENT_CREDITS,
        allow_inf_nan=False,
        description="Credits to add (positive) or take (negative), up to 3 decimals, at most 10,000,000.",
    )
    note: str = Field(min_length=1, max_length=200, description="Why; kept on the ledger row.")

    @field_validator("amount")
    @classmethod
    def _non_zero(cls, value: Decimal) -> Decimal:
        if value == 0:
            raise ValueError("amount must be non-zero")
        return value


@router.post("/users/{user_id}/credits", response_model=LedgerEntryOut, responses=error_responses(404))
async def adjust_user_credits(
    user_id: uuid.UUID,
    body: CreditAdjustmentIn,
    admin: AdminUser,
    session: SessionDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    """Grant or take credits. With an Idempotency-Key a retried adjustment is applied once."""
    key = idempotent.key
    ledger_key = f"admin:{admin.id}:{key}" if key else f"admin:{uuid.uuid4()}"

    async def produce() -> LedgerEntryOut:
        movement = await admin_service.adjust_credits(
            session, admin, user_id, credits.to_millicredits(body.amount), body.note, ledger_key
        )
        return ledger_entry_out(movement.entry)

    return await idempotent.respond(200, produce)

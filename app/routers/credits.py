from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.dependencies import CurrentUser, SessionDep
from app.routers.users import ledger_entry_out
from app.schemas.users import LedgerPageOut
from app.services import credits as credits_service

router = APIRouter(prefix="/credits", tags=["credits"])


@router.get("/transactions", response_model=LedgerPageOut)
async def transactions(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> LedgerPageOut:
    """Your credit movements, newest first. Pass `next_cursor` back as `cursor` for the next page."""
    page = await credits_service.ledger_page(session, user.id, limit, cursor)
    return LedgerPageOut(
        items=[ledger_entry_out(entry) for entry in page.entries], next_cursor=page.next_cursor
    )

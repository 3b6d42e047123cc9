from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from app.db.base import utcnow
from app.dependencies import ContainerDep, CurrentUser, SessionDep, SettingsDep
from app.routers.admin.reports import attachment
from app.routers.users import ledger_entry_out
from app.schemas.errors import error_responses
from app.schemas.users import LedgerPageOut
from app.services import credits as credits_service
from app.services import reports
from app.services.periods import period_ending

router = APIRouter(prefix="/credits", tags=["credits"])


@router.get("/transactions", response_model=LedgerPageOut, responses=error_responses(400))
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


class TransactionsFormat(StrEnum):
    csv = "csv"
    pdf = "pdf"


@router.get(
    "/transactions/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/pdf": {}}}},
)
async def export_transactions(
    user: CurrentUser,
    container: ContainerDep,
    settings: SettingsDep,
    from_: Annotated[
        AwareDatetime | None,
        Query(
            alias="from",
            description="inclusive, ISO 8601; default: as far back as allowed",
        ),
    ] = None,
    to: Annotated[AwareDatetime | None, Query(description="exclusive, ISO 8601; default now")] = None,
    format: Annotated[TransactionsFormat, Query()] = TransactionsFormat.csv,
) -> StreamingResponse:
    """Your credit movements in the period as a file, oldest first: CSV, or a PDF statement with totals."""
    until = to or utcnow()
    max_days = settings.reports_max_range_days
    period = period_ending(from_, until, max_days, max_days)
    report = reports.user_transactions_report(
        container, user.id, reports.ReportFormat(format.value), period, settings.reports_pdf_max_rows
    )
    return attachment(report)

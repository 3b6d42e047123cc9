"""GET /admin/reports/{kind}: sales, usage, ledger or users of a period as CSV, JSON lines, XLSX or PDF,
streamed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from app.db.base import utcnow
from app.dependencies import ContainerDep, SettingsDep
from app.services import reports
from app.services.periods import period_ending

router = APIRouter()


def attachment(report: reports.Report) -> StreamingResponse:
    return StreamingResponse(
        report.body,
        media_type=report.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{report.filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/reports/{kind}",
    response_class=StreamingResponse,
    responses={200: {"content": {content_type: {} for content_type in reports.CONTENT_TYPES.values()}}},
)
async def report(
    kind: reports.ReportKind,
    container: ContainerDep,
    settings: SettingsDep,
    from_: Annotated[
        AwareDatetime | None, Query(alias="from", description="inclusive, ISO 8601; default 30 days ago")
    ] = None,
    to: Annotated[AwareDatetime | None, Query(description="exclusive, ISO 8601; default now")] = None,
    format: Annotated[reports.ReportFormat, Query()] = reports.ReportFormat.csv,
) -> StreamingResponse:
    """sales: orders paid in the period; usage: jobs created; ledger: credit movements; users: accounts
    created. Oldest first. CSV has a header row; JSON is one object per line; XLSX and PDF end with
    totals (per currency for sales; a PDF lists at most REPORTS_PDF_MAX_ROWS rows)."""
    until = to or utcnow()
    period = period_ending(from_, until, 30, settings.reports_max_range_days)
    return attachment(reports.open_report(container, kind, format, period, settings.reports_pdf_max_rows))

"""GET /admin/audit-logs: the audit trail, filtered, newest first."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from app.dependencies import SessionDep
from app.schemas.admin import AuditLogOut, AuditLogPageOut
from app.schemas.errors import error_responses
from app.services import audit as audit_service

router = APIRouter()


@router.get("/audit-logs", response_model=AuditLogPageOut, responses=error_responses(400))
async def list_audit_logs(
    session: SessionDep,
    action: Annotated[list[str] | None, Query(max_length=20, description="one or more actions")] = None,
    actor: Annotated[uuid.UUID | None, Query(description="who did it")] = None,
    subject: Annotated[uuid.UUID | None, Query(description="whose account it concerned")] = None,
    from_: Annotated[AwareDatetime | None, Query(alias="from", description="inclusive, ISO 8601")] = None,
    to: Annotated[AwareDatetime | None, Query(description="exclusive, ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditLogPageOut:
    """Pass `next_cursor` back as `cursor` for the next (older) page."""
    page = await audit_service.page(
        session,
        limit=limit,
        cursor=cursor,
        actions=action,
        actor_id=actor,
        subject_id=subject,
        since=from_,
        until=to,
    )
    return AuditLogPageOut(
        items=[AuditLogOut.model_validate(row) for row in page.entries], next_cursor=page.next_cursor
    )

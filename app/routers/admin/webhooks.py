"""GET /admin/webhooks (the stored provider events, by status) and POST /admin/webhooks/{id}/replay."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.dependencies import AdminUser, ContainerDep, SessionDep
from app.schemas.admin import WebhookEventOut, WebhookEventPageOut
from app.schemas.errors import error_responses
from app.services import webhook_replay

router = APIRouter()

EventStatus = Literal["received", "processed", "ignored", "failed"]


@router.get("/webhooks", response_model=WebhookEventPageOut, responses=error_responses(400))
async def list_webhook_events(
    session: SessionDep,
    status: Annotated[list[EventStatus] | None, Query(max_length=4, description="one or more")] = None,
    provider: Annotated[str | None, Query(max_length=32, description="stripe, razorpay, dodo...")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> WebhookEventPageOut:
    """Newest first. `failed` events kept their error and wait for the provider's retry or a replay;
    `ignored` ones were about nothing of ours. Pass `next_cursor` back as `cursor`."""
    page = await webhook_replay.list_events(
        session, limit=limit, cursor=cursor, statuses=list(status) if status else None, provider=provider
    )
    return WebhookEventPageOut(
        items=[WebhookEventOut.model_validate(event) for event in page.events], next_cursor=page.next_cursor
    )


@router.post("/webhooks/{event_id}/replay", response_model=WebhookEventOut, responses=error_responses(404))
async def replay_webhook_event(
    event_id: uuid.UUID, admin: AdminUser, session: SessionDep, container: ContainerDep
) -> WebhookEventOut:
    """Apply a stored event that was not applied (status failed or received) again, as its live delivery
    is applied; it credits at most once. The answer's `status` tells the outcome (`failed` with the new
    `error` if it failed again). 409 `webhook_already_applied` for an applied event."""
    event = await webhook_replay.replay(session, container, admin, event_id)
    return WebhookEventOut.model_validate(event)

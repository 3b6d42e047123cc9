from __future__ import annotations

from fastapi import APIRouter, Request

from app.dependencies import ContainerDep, SessionDep
from app.schemas.webhooks import WebhookAck
from app.services import clerk as clerk_service

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post("/clerk", response_model=WebhookAck)
@router.post("/clerkwebhook", response_model=WebhookAck, include_in_schema=False)
async def clerk_webhook(request: Request, session: SessionDep, container: ContainerDep) -> WebhookAck:
    """Svix-signed Clerk events (user.created / user.updated / user.deleted). Redeliveries answer 200
    and change nothing."""
    body = await request.body()
    processed = await clerk_service.receive_webhook(session, container, body, request.headers)
    return WebhookAck(status="processed" if processed else "duplicate")

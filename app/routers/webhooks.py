from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.dependencies import ContainerDep, SessionDep
from app.models import Provider
from app.schemas.errors import error_responses
from app.schemas.webhooks import WebhookAck
from app.services import clerk as clerk_service
from app.services import generation
from app.services.billing import webhooks as payment_webhooks

# Every provider posts a JSON event
# whose signature (in the provider's headers) is checked on the raw bytes: 400 when it does not hold,
# 503 when this server has no secret for the provider.
router = APIRouter(
    prefix="/webhooks",
    tags=["webhooks"],
    responses=error_responses(400, 503),
)
# The event is read as raw bytes (the signature covers them), so FastAPI cannot declare it.
_EVENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "description": "The provider's event."}}
        },
    }
}


def _ack(container: Container, provider: str, outcome: str) -> WebhookAck:
    # Refusals (bad signature, failed effect) are counted by the HTTP metrics under their status.
    container.metrics.webhook_events.labels(provider, outcome).inc()
    return WebhookAck(status=outcome)


async def _payment(
    request: Request, session: AsyncSession, container: Container, provider: Provider
) -> WebhookAck:
    body = await request.body()
    outcome = await payment_webhooks.receive(session, container, provider, body, request.headers)
    return _ack(container, provider.value, outcome)


@router.post("/clerk", response_model=WebhookAck, openapi_extra=_EVENT_BODY)
@router.post("/clerkwebhook", response_model=WebhookAck, include_in_schema=False)
async def clerk_webhook(request: Request, session: SessionDep, container: ContainerDep) -> WebhookAck:
    """Svix-signed Clerk events (user.created / user.updated / user.deleted). Redeliveries answer 200
    and change nothing."""
    body = await request.body()
    processed = await clerk_service.receive_webhook(session, container, body, request.headers)
    return _ack(container, "clerk", "processed" if processed else "duplicate")


@router.post("/stripe", response_model=WebhookAck, openapi_extra=_EVENT_BODY)
async def stripe_webhook(request: Request, session: SessionDep, container: ContainerDep) -> WebhookAck:
    """Stripe events, verified with Stripe-Signature (5 minute tolerance)."""
    return await _payment(request, session, container, Provider.stripe)


@router.post("/razorpay", response_model=WebhookAck, openapi_extra=_EVENT_BODY)
async def razorpay_webhook(request: Request, session: SessionDep, container: ContainerDep) -> WebhookAck:
    """Razorpay events, verified with X-Razorpay-Signature (HMAC of the raw body)."""
    return await _payment(request, session, container, Provider.razorpay)


@router.post("/dodo", response_model=WebhookAck, openapi_extra=_EVENT_BODY)
async def dodo_webhook(request: Request, session: SessionDep, container: ContainerDep) -> WebhookAck:
    """Dodo Payments events, verified as Standard Webhooks (webhook-id/-timestamp/-signature)."""
    return await _payment(request, session, container, Provider.dodo)


@router.post("/replicate", response_model=WebhookAck, openapi_extra=_EVENT_BODY)
async def replicate_webhook(request: Request, session: SessionDep, container: ContainerDep) -> WebhookAck:
    """Replicate prediction and training updates (Standard Webhooks signature): wakes the job waiting
    on a prediction; ends a personal model's training (once, however often it is delivered)."""
    outcome = await generation.receive_webhook(session, container, await request.body(), request.headers)
    return _ack(container, "replicate", outcome)

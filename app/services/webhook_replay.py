"""An administrator's view of the webhook inbox: stored events by status, and the replay of one that was
not applied, through the code that applies a live delivery of its provider."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.models import Provider, User, WebhookEvent
from app.services import clerk, webhook_inbox
from app.services.billing import webhooks as payment_webhooks
from app.services.webhook_inbox import EventPage, Handler, Replayer


def _replayers(session: AsyncSession, ctx: Container) -> dict[str, Replayer]:
    """Providers whose stored events can be applied again. Replicate's events only wake a job that polls
    anyway, so there is nothing to replay for them."""

    async def payment(stored: WebhookEvent) -> Handler:
        return await payment_webhooks.replayer(session, ctx, stored)

    async def clerk_event(stored: WebhookEvent) -> Handler:
        return await clerk.replayer(session, ctx, stored)

    replayers: dict[str, Replayer] = {provider.value: payment for provider in Provider}
    replayers[clerk.PROVIDER] = clerk_event
    return replayers


async def list_events(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    statuses: list[str] | None,
    provider: str | None,
) -> EventPage:
    return await webhook_inbox.page(session, limit=limit, cursor=cursor, statuses=statuses, provider=provider)


async def replay(session: AsyncSession, ctx: Container, admin: User, row_id: uuid.UUID) -> WebhookEvent:
    """409 when the event was already applied (or its provider's events cannot be replayed); 503 when
    its provider is no longer configured."""
    return await webhook_inbox.replay(session, row_id, _replayers(session, ctx), actor_id=admin.id)

"""The webhook inbox: every verified delivery is recorded once, in the same transaction as its effect.

A redelivery of a handled event changes nothing. An event whose effect fails keeps the error on its row
and answers 500, so the provider retries; the retry applies it again (the effects are idempotent)."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.errors import AppError
from app.repositories.webhook_events import WebhookEventRepository

log = structlog.get_logger("app.webhooks")

Outcome = Literal["processed", "duplicate", "ignored"]
Handler = Callable[[], Awaitable[bool]]  # True when the event type was handled, False when ignored


class WebhookProcessingFailed(AppError):
    status_code = 500
    code = "webhook_processing_failed"
    default_detail = "The event could not be applied; it is recorded and a retry will apply it."


async def receive(
    session: AsyncSession,
    provider: str,
    event_id: str,
    event_type: str,
    payload: dict[str, Any],
    handler: Handler,
) -> Outcome:
    events = WebhookEventRepository(session)
    # Locks the event's row: a concurrent redelivery waits here instead of applying it twice.
    if not await events.record(provider, event_id, event_type, payload):
        existing = await events.get_event(provider, event_id)
        if existing is None or existing.handled_at is not None:
            log.info("webhook.duplicate", provider=provider, event_id=event_id)
            return "duplicate"
    try:
        async with session.begin_nested():
            handled = await handler()
    except Exception as exc:
        log.exception("webhook.apply_failed", provider=provider, event_id=event_id, event_type=event_type)
        await events.record_error(provider, event_id, "".join(traceback.format_exception_only(exc)).strip())
        # Commit the inbox row with its error (the effect was rolled back with the savepoint).
        raise WebhookProcessingFailed(keep_changes=True) from exc
    await events.mark_handled(provider, event_id, utcnow())
    if not handled:
        log.info("webhook.ignored", provider=provider, event_type=event_type)
        return "ignored"
    return "processed"

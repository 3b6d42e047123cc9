"""The webhook inbox: every verified delivery is recorded once, in the same transaction as its effect.

A redelivery of a handled event changes nothing. An event whose effect fails keeps the error on its row
and answers 500, so the provider retries; the retry applies it again (the effects are idempotent)."""

from __future__ import annotations

import re
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.errors import AppError, BadRequest
from app.repositories.webhook_events import WebhookEventRepository

log = structlog.get_logger("app.webhooks")

Outcome = Literal["processed", "duplicate", "ignored"]
Handler = Callable[[], Awaitable[bool]]  # True when the event type was handled, False when ignored


# The inbox's columns: `webhook_events.event_id` is 255 characters, `event_type` 100.
MAX_EVENT_ID_LENGTH = 255
MAX_EVENT_TYPE_LENGTH = 100
_EVENT_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_EVENT_ID_LENGTH}}}")


class InvalidEventId(BadRequest):
    code = "invalid_event_id"
    default_detail = "The webhook's event id is missing, too long or not printable ASCII."


def is_valid_event_id(value: str) -> bool:
    return _EVENT_ID.fullmatch(value) is not None


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
    # Event ids often travel in unsigned headers: anyone who can replay a signed body can send any id.
    if not is_valid_event_id(event_id):
        log.warning("webhook.invalid_event_id", provider=provider, length=len(event_id))
        raise InvalidEventId()
    event_type = event_type[:MAX_EVENT_TYPE_LENGTH]
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

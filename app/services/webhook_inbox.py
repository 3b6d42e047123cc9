"""The webhook inbox: every verified delivery is recorded once, in the same transaction as its effect.

A redelivery of a handled event changes nothing. An event whose effect fails keeps the error on its row
(status `failed`) and answers 500, so the provider retries; the retry applies it again (the effects are
idempotent). An administrator can also replay a stored event that is not applied yet (`replay`): the same
effect, under the same row lock, so it is applied at most once whatever arrives at the same time.

A delivery whose signature does not hold is refused (`refused`) with an audit row and nothing stored."""

from __future__ import annotations

import re
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.errors import AppError, BadRequest, BadSignature, Conflict, NotFound
from app.models import AuditAction, WebhookEvent, WebhookStatus
from app.repositories.webhook_events import WebhookEventRepository
from app.services import audit
from app.services.pagination import decode_cursor, encode_cursor

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
        return await _apply(session, events, provider, event_id, event_type, handler)
    except Exception as exc:
        # Commit the inbox row with its error (the effect was rolled back with the savepoint).
        raise WebhookProcessingFailed(keep_changes=True) from exc


async def _apply(
    session: AsyncSession,
    events: WebhookEventRepository,
    provider: str,
    event_id: str,
    event_type: str,
    handler: Handler,
) -> Outcome:
    """Run the effect in a savepoint, locked row held; on failure keep the error, roll the effect back
    and re-raise."""
    try:
        async with session.begin_nested():
            handled = await handler()
    except Exception as exc:
        log.exception("webhook.apply_failed", provider=provider, event_id=event_id, event_type=event_type)
        await events.record_error(provider, event_id, "".join(traceback.format_exception_only(exc)).strip())
        raise
    status = WebhookStatus.processed if handled else WebhookStatus.ignored
    await events.mark_handled(provider, event_id, utcnow(), status)
    if not handled:
        log.info("webhook.ignored", provider=provider, event_type=event_type)
        return "ignored"
    return "processed"


# --- refusals --------------------------------------------------------------------------------------


async def refused(session: AsyncSession, provider: str, reason: str) -> BadSignature:
    """A delivery whose signature does not hold: its audit row (provider, reason, the caller's ip; never
    the body, headers or secret), committed with the 400 that the returned error answers."""
    log.warning("webhook.rejected", provider=provider, reason=reason)
    await audit.record(
        session, action=AuditAction.webhook_refused, details={"provider": provider, "reason": reason}
    )
    return BadSignature(keep_changes=True)


# --- administration --------------------------------------------------------------------------------


class WebhookAlreadyApplied(Conflict):
    code = "webhook_already_applied"
    default_detail = "This event was already applied; replaying it would change nothing."


class WebhookNotReplayable(Conflict):
    code = "webhook_not_replayable"
    default_detail = "Events of this provider cannot be replayed."


# Builds the effect of a stored event from its row (the same code a live delivery runs).
Replayer = Callable[[WebhookEvent], Awaitable[Handler]]


@dataclass(frozen=True)
class EventPage:
    events: list[WebhookEvent]
    next_cursor: str | None


async def page(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None = None,
    statuses: list[str] | None = None,
    provider: str | None = None,
) -> EventPage:
    """Stored events, newest first; pass `next_cursor` back as `cursor` for the next page."""
    rows = await WebhookEventRepository(session).page(
        limit=limit + 1,
        after=decode_cursor(cursor) if cursor else None,
        statuses=statuses,
        provider=provider,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return EventPage(rows, encode_cursor(last.received_at, last.id) if last else None)


async def replay(
    session: AsyncSession, row_id: uuid.UUID, replayers: dict[str, Replayer], *, actor_id: uuid.UUID
) -> WebhookEvent:
    """Apply a stored event that is not applied yet (failed, or stuck `received`) again, through its
    provider's `Replayer`. 409 when it was already applied: nothing is applied twice. A replay that fails
    again keeps the new error on the row and answers the event (status `failed`), not an error."""
    events = WebhookEventRepository(session)
    event = await events.lock(row_id)
    if event is None:
        raise NotFound("No such webhook event.")
    if event.handled_at is not None:
        raise WebhookAlreadyApplied()
    replayer = replayers.get(event.provider)
    if replayer is None:
        raise WebhookNotReplayable(f"Events of {event.provider} cannot be replayed.")
    handler = await replayer(event)
    try:
        outcome: str = await _apply(
            session, events, event.provider, event.event_id, event.event_type, handler
        )
    except Exception:  # noqa: BLE001 - kept on the row (status failed) and told in the answer
        outcome = WebhookStatus.failed.value
    await audit.record(
        session,
        action=AuditAction.webhook_replayed,
        actor_id=actor_id,
        details={
            "webhook_event_id": event.id,
            "provider": event.provider,
            "event_type": event.event_type,
            "outcome": outcome,
        },
    )
    replayed = await events.get_event(event.provider, event.event_id)
    assert replayed is not None
    return replayed


async def failed_backlog(session: AsyncSession, older_than: timedelta, *, now: datetime | None = None) -> int:
    """How many failed events have waited longer than `older_than` (at `now`, default the present)."""
    return await WebhookEventRepository(session).count_failed_since_before((now or utcnow()) - older_than)

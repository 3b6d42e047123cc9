"""Transactional email through the outbox: written with the change that causes it, sent after commit,
retried with backoff when the provider fails, never lost."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.retry import retry_transient, transient_database_error
from app.db.session import Database
from app.integrations.email import EmailDeliveryError, EmailMessage, EmailSender
from app.models import EmailStatus, OutboxEmail
from app.repositories.outbox import OutboxRepository

log = structlog.get_logger("app.email")

MAX_ATTEMPTS = 8
SEND_LEASE = timedelta(minutes=2)


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at 1 h."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


async def enqueue(
    session: AsyncSession,
    *,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    tag: str,
    user_id: uuid.UUID | None,
) -> OutboxEmail:
    return await OutboxRepository(session).add(
        OutboxEmail(recipient=to, subject=subject, text_body=text, html_body=html, tag=tag, user_id=user_id)
    )


async def deliver_due(database: Database, sender: EmailSender, limit: int = 50) -> int:
    """Send every due message, each in its own short transaction; returns how many were sent."""
    now = utcnow()
    async with database.session_scope() as session:
        due = await OutboxRepository(session).due_ids(now, limit)
    sent = 0
    for email_id in due:
        try:
            sent += await _deliver_one(database, sender, email_id)
        except Exception as exc:
            if not transient_database_error(exc):
                raise
            # The message stays due (or leased): the housekeeping loop sends it on a later round.
            log.warning("email.deferred", email_id=str(email_id), error=type(exc).__name__)
    return sent


async def _claim(database: Database, email_id: uuid.UUID) -> tuple[EmailMessage, int] | None:
    """The message and its attempt count, or None when another sender has it."""
    now = utcnow()
    async with database.session_scope() as session:
        repository = OutboxRepository(session)
        if not await repository.claim(email_id, now, now + SEND_LEASE):
            return None
        email = await repository.get(email_id)
        assert email is not None
        message = EmailMessage(
            to=email.recipient,
            subject=email.subject,
            text=email.text_body,
            html=email.html_body,
            tags=(email.tag,),
            idempotency_key=str(email.id),
        )
        return message, email.attempts


async def _deliver_one(database: Database, sender: EmailSender, email_id: uuid.UUID) -> int:
    # Senders after several requests at once claim side by side: InnoDB may pick one as a deadlock victim.
    claimed = await retry_transient(lambda: _claim(database, email_id), what="email.claim")
    if claimed is None:
        return 0
    message, attempts = claimed
    # The claim is committed before the provider is called, so a slow provider holds no database lock.
    try:
        provider_message_id = await sender.send(message)
    except EmailDeliveryError as exc:
        await _record_failure(database, email_id, attempts, str(exc), exc.retryable)
        return 0
    except Exception as exc:
        log.exception("email.sender_crashed", email_id=str(email_id))
        await _record_failure(database, email_id, attempts, f"{type(exc).__name__}: {exc}", True)
        return 0
    await retry_transient(
        lambda: _mark_sent(database, email_id, sender.name, provider_message_id), what="email.mark_sent"
    )
    log.info("email.sent", email_id=str(email_id), provider=sender.name, tag=message.tags[0])
    return 1


async def _mark_sent(
    database: Database, email_id: uuid.UUID, provider: str, provider_message_id: str
) -> None:
    async with database.session_scope() as session:
        email = await OutboxRepository(session).get(email_id)
        if email is not None:
            email.status = EmailStatus.sent.value
            email.sent_at = utcnow()
            email.provider = provider
            email.provider_message_id = provider_message_id[:255]
            email.last_error = None


async def _record_failure(
    database: Database, email_id: uuid.UUID, attempts: int, error: str, retryable: bool
) -> None:
    give_up = not retryable or attempts >= MAX_ATTEMPTS
    async with database.session_scope() as session:
        email = await OutboxRepository(session).get(email_id)
        if email is None:
            return
        email.last_error = error[:500]
        if give_up:
            email.status = EmailStatus.failed.value
        else:
            email.next_attempt_at = utcnow() + retry_delay(attempts)
    log.warning(
        "email.send_failed", email_id=str(email_id), attempts=attempts, retryable=retryable, gave_up=give_up
    )

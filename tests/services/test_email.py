"""Emails go through the outbox: sent after commit, retried with backoff, never lost."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.db.session import Database
from app.integrations.email import EmailDeliveryError, EmailMessage
from app.models import EmailStatus, OutboxEmail, User
from app.services import email as email_service
from tests.support.accounts import register


class FlakySender:
    name = "flaky"

    def __init__(self, failures: int, *, retryable: bool = True) -> None:
        self.failures = failures
        self.retryable = retryable
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise EmailDeliveryError("provider down", retryable=self.retryable)
        self.sent.append(message)
        return f"flaky-{len(self.sent)}"


async def _outbox(session: AsyncSession) -> OutboxEmail:
    session.expunge_all()
    email = await session.scalar(select(OutboxEmail))
    assert email is not None
    return email


async def test_a_failed_send_keeps_the_account_and_is_retried_later(
    client: httpx.AsyncClient, session: AsyncSession, container: Container, database: Database
) -> None:
    container.email = FlakySender(failures=1)
    response = await register(client, "retry@example.com")
    assert response.status_code == 201  # the provider's outage is not the user's problem
    assert await session.scalar(select(User).where(User.email == "retry@example.com")) is not None
    email = await _outbox(session)
    assert (email.status, email.attempts) == (EmailStatus.pending.value, 1)
    assert email.last_error == "provider down"
    assert email.next_attempt_at > utcnow() + timedelta(seconds=20)

    assert await email_service.deliver_due(database, container.email) == 0  # not due yet
    email.next_attempt_at = utcnow() - timedelta(seconds=1)
    await session.flush()
    assert await email_service.deliver_due(database, container.email) == 1
    email = await _outbox(session)
    assert (email.status, email.attempts, email.provider) == (EmailStatus.sent.value, 2, "flaky")
    sender = container.email
    assert isinstance(sender, FlakySender)
    assert sender.sent[0].to == "retry@example.com"
    assert sender.sent[0].idempotency_key == str(email.id)


async def test_a_permanent_refusal_stops_retrying(
    client: httpx.AsyncClient, session: AsyncSession, container: Container
) -> None:
    container.email = FlakySender(failures=5, retryable=False)
    await register(client, "bounce@example.com")
    email = await _outbox(session)
    assert (email.status, email.attempts) == (EmailStatus.failed.value, 1)


async def test_gives_up_after_the_last_attempt(session: AsyncSession, database: Database) -> None:
    sender = FlakySender(failures=100)
    email = await email_service.enqueue(
        session, to="x@example.com", subject="s", text="t", html=None, tag="test", user_id=None
    )
    email.attempts = email_service.MAX_ATTEMPTS - 1
    await session.flush()
    await email_service.deliver_due(database, sender)
    email = await _outbox(session)
    assert (email.status, email.attempts) == (EmailStatus.failed.value, email_service.MAX_ATTEMPTS)


async def test_a_claimed_message_is_not_sent_twice(session: AsyncSession, database: Database) -> None:
    await email_service.enqueue(
        session, to="y@example.com", subject="s", text="t", html=None, tag="test", user_id=None
    )
    await session.flush()
    sender = FlakySender(failures=0)
    sent = await email_service.deliver_due(database, sender) + await email_service.deliver_due(
        database, sender
    )
    assert sent == 1
    assert len(sender.sent) == 1


def test_backoff_grows_and_is_capped() -> None:
    delays = [email_service.retry_delay(attempt).total_seconds() for attempt in range(1, 10)]
    assert delays[:4] == [30, 60, 120, 240]
    assert max(delays) == 3600

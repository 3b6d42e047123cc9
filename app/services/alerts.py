"""Operator alerts: five conditions checked by the housekeeping loop, each kind sent at most once per
ALERT_WINDOW_SECONDS to ALERT_WEBHOOK_URL, whatever the number of processes.

Once per window across processes: the time each kind was last sent lives in the database
(`alert_states`), and a kind is claimed with one conditional UPDATE before its message leaves, so of
several processes seeing the same condition only one sends. (Redis is optional here, and the database is
what every process shares already.) When the database cannot be reached (exactly when the readiness
alert matters) the claim falls back to this process's memory: at most once per window per process.

Delivery runs as its own task, after the claims are committed: a receiver that hangs or is down costs
the housekeeping round nothing. Each attempt is bounded by ALERT_TIMEOUT_SECONDS; when every attempt
failed the claim is given back, so the next round tries again rather than losing the alert for a window.
A new round claims nothing while a delivery is still in flight (they never pile up)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.integrations.alerts import AlertDeliveryFailed, AlertMessage, AlertSender
from app.repositories.alerts import AlertRepository
from app.services import webhook_inbox
from app.services.health import check_readiness

log = structlog.get_logger("app.alerts")


class AlertKind(StrEnum):
    webhooks_failing = "webhooks_failing"
    job_failures = "job_failures"
    refunds_disputes = "refunds_disputes"
    provider_errors = "provider_errors"
    readiness_failing = "readiness_failing"


@dataclass(frozen=True)
class Claim:
    message: AlertMessage
    claimed_at: datetime
    previous: datetime | None
    in_database: bool


async def run(ctx: Container, now: datetime | None = None) -> list[AlertMessage]:
    """One housekeeping round: record readiness, evaluate the conditions, claim the kinds that hold and
    are not sent within the window, and start delivering them. Returns the messages it started to send
    (nothing at all without ALERT_WEBHOOK_URL)."""
    sender = ctx.alert_sender
    if sender is None:
        return []
    now = now or utcnow()
    await record_readiness(ctx, now)
    if ctx.alert_delivery is not None and not ctx.alert_delivery.done():
        log.info("alerts.delivery_in_flight")
        return []
    claims = [claim for message in await evaluate(ctx, now) if (claim := await _claim(ctx, message, now))]
    if claims:
        ctx.alert_delivery = asyncio.create_task(_deliver(ctx, sender, claims), name="alerts")
    return [claim.message for claim in claims]


async def record_readiness(ctx: Container, now: datetime) -> None:
    """The readiness checks /readyz runs, as seen from this process now."""
    readiness = await check_readiness(ctx, timeout_seconds=ctx.settings.db_connect_timeout_seconds + 1)
    ctx.readiness_record.record(bool(readiness.failing), readiness.explain(), now)


async def evaluate(ctx: Container, now: datetime) -> list[AlertMessage]:
    """The alerts whose condition holds at `now`."""
    settings = ctx.settings
    messages = [
        message
        for message in (_readiness_alert(ctx, settings, now), _provider_alert(ctx, settings, now))
        if message is not None
    ]
    try:
        async with ctx.database.session_scope() as session:
            messages += await _database_alerts(session, settings, now)
    except Exception:  # the database is down: the readiness alert says so
        log.warning("alerts.database_conditions_unreadable", exc_info=True)
    return messages


def _readiness_alert(ctx: Container, settings: Settings, now: datetime) -> AlertMessage | None:
    record = ctx.readiness_record
    threshold = settings.alert_readyz_failing_seconds
    if threshold == 0 or record.failing_since is None:
        return None
    failing_for = now - record.failing_since
    if failing_for < timedelta(seconds=threshold):
        return None
    return AlertMessage(
        AlertKind.readiness_failing.value,
        "Pixforge is not ready (/readyz failing)",
        f"Readiness has failed for {int(failing_for.total_seconds())} s: {record.explanation}.",
    )


def _provider_alert(ctx: Container, settings: Settings, now: datetime) -> AlertMessage | None:
    threshold = settings.alert_provider_errors
    if threshold == 0:
        return None
    minutes = settings.alert_recent_minutes
    counts = ctx.provider_outages.counts_since(now - timedelta(minutes=minutes))
    failing = {provider: count for provider, count in sorted(counts.items()) if count >= threshold}
    if not failing:
        return None
    named = ", ".join(f"{provider} ({count})" for provider, count in failing.items())
    return AlertMessage(
        AlertKind.provider_errors.value,
        f"AI provider failing: {', '.join(failing)}",
        f"5xx answers, timeouts or unreachable in the last {minutes} min: {named}.",
    )


async def _database_alerts(session: AsyncSession, settings: Settings, now: datetime) -> list[AlertMessage]:
    messages: list[AlertMessage] = []
    repository = AlertRepository(session)
    if minutes := settings.alert_webhook_failed_minutes:
        failed = await webhook_inbox.failed_backlog(session, timedelta(minutes=minutes), now=now)
        if failed:
            messages.append(
                AlertMessage(
                    AlertKind.webhooks_failing.value,
                    "Webhooks are failing to apply",
                    f"{failed} verified webhook event(s) have stayed failed for more than {minutes} min: "
                    "payments or accounts not updated (GET /api/v1/admin/webhooks?status=failed).",
                )
            )
    if settings.alert_job_failure_rate > 0:
        minutes = settings.alert_recent_minutes
        finished, failed = await repository.job_outcomes_since(now - timedelta(minutes=minutes))
        if (
            finished >= settings.alert_job_failure_min_jobs
            and failed >= settings.alert_job_failure_rate * finished
        ):
            messages.append(
                AlertMessage(
                    AlertKind.job_failures.value,
                    "AI jobs are failing",
                    f"{failed} of the {finished} jobs of the last {minutes} min failed "
                    f"({failed / finished:.0%}; threshold {settings.alert_job_failure_rate:.0%}).",
                )
            )
    if threshold := settings.alert_refunds_per_hour:
        adjustments = await repository.adjustments_since(now - timedelta(hours=1))
        if adjustments >= threshold:
            messages.append(
                AlertMessage(
                    AlertKind.refunds_disputes.value,
                    "Unusual number of refunds or disputes",
                    f"{adjustments} refunds or disputes in the last hour (threshold {threshold}).",
                )
            )
    return messages


async def _claim(ctx: Container, message: AlertMessage, now: datetime) -> Claim | None:
    window = timedelta(seconds=ctx.settings.alert_window_seconds)
    try:
        async with ctx.database.session_scope() as session:
            claimed, previous = await AlertRepository(session).claim(message.kind, now, now - window)
    except Exception:  # no database: this process's memory stands in (see the docstring)
        log.warning("alerts.claim_in_memory", kind=message.kind, exc_info=True)
        previous = ctx.alerts_sent_here.get(message.kind)
        if previous is not None and previous > now - window:
            return None
        ctx.alerts_sent_here[message.kind] = now
        return Claim(message, now, previous, in_database=False)
    return Claim(message, now, previous, in_database=True) if claimed else None


async def _deliver(ctx: Container, sender: AlertSender, claims: list[Claim]) -> None:
    for claim in claims:
        try:
            await sender.send(claim.message)
        except AlertDeliveryFailed as exc:
            log.error("alert.undelivered", kind=claim.message.kind, reason=str(exc))
            await _release(ctx, claim)
        except Exception:  # one bad delivery must not keep the others from going out
            log.exception("alert.undelivered", kind=claim.message.kind)
            await _release(ctx, claim)
        else:
            log.info("alert.sent", kind=claim.message.kind)


async def _release(ctx: Container, claim: Claim) -> None:
    """Gives the claim back, so a later round sends the alert once the receiver answers again."""
    kind = claim.message.kind
    if not claim.in_database:
        if ctx.alerts_sent_here.get(kind) == claim.claimed_at:
            ctx.alerts_sent_here.pop(kind)
        return
    try:
        async with ctx.database.session_scope() as session:
            await AlertRepository(session).release(kind, claim.claimed_at, claim.previous)
    except Exception:  # then the alert waits for its window to pass
        log.warning("alerts.release_failed", kind=kind, exc_info=True)

"""Subscriptions: each paid billing period grants its credits once and the subscriber's plan; the plan
follows the subscriptions still running when one ends. Events come in any order: a change that arrives
before anything else about its subscription creates its row, so a later payment sees that it ended."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.integrations.payments.base import Subscriber
from app.models import LedgerReason, Provider, Subscription
from app.models.audit import AuditAction
from app.repositories.billing import SubscriptionRepository
from app.repositories.users import UserRepository
from app.services import audit, credits
from app.services.catalogue import get_plan

FREE_PLAN = "free"


async def paid(
    session: AsyncSession,
    *,
    provider: Provider,
    subscription_id: str,
    subscriber: Subscriber,
    period_key: str,
    current_period_end: datetime | None = None,
) -> None:
    """A billing period was paid: its credits (once per period, ledger key `period_key`) and the
    subscriber's plan. A payment that arrives after the subscription ended grants its credits and nothing
    else."""
    plan = await get_plan(session, subscriber.plan_ref)  # a plan taken off sale still renews
    subscription = await SubscriptionRepository(session).ensure(
        {
            "user_id": subscriber.user_id,
            "plan_id": plan.id,
            "provider": provider.value,
            "provider_subscription_id": subscription_id,
            "status": "active",
        }
    )
    granted = await credits.grant(
        session,
        subscriber.user_id,
        plan.credits,
        LedgerReason.subscription,
        key=period_key,
        reference=subscription_id,
    )
    if not granted.replayed:
        await audit.record(
            session,
            action=AuditAction.payment_credited,
            subject_id=subscriber.user_id,
            details={"subscription_id": subscription_id, "provider": provider.value, "credits": plan.credits},
        )
    if subscription.ended_at is None:
        subscription.status = "active"
        if current_period_end is not None:
            subscription.current_period_end = current_period_end
        user = await UserRepository(session).get(subscriber.user_id)
        if user is not None and plan.grants_plan:
            user.plan = plan.grants_plan
    await session.flush()


async def changed(
    session: AsyncSession,
    *,
    provider: Provider,
    subscription_id: str,
    status: str,
    cancel_at_period_end: bool = False,
    current_period_end: datetime | None = None,
    ended: bool = False,
    subscriber: Subscriber | None = None,
) -> Subscription | None:
    """Status changes. When it has ended, the subscriber's plan follows the subscriptions they still have:
    another one still running (a resubscription after a cancellation at period end) keeps its plan, none
    puts them back on the free plan. None when the subscription is unknown and names no subscriber."""
    repository = SubscriptionRepository(session)
    subscription = await repository.get_by_provider_id(provider.value, subscription_id)
    if subscription is None:
        if subscriber is None:
            return None
        plan = await get_plan(session, subscriber.plan_ref)
        subscription = await repository.ensure(
            {
                "user_id": subscriber.user_id,
                "plan_id": plan.id,
                "provider": provider.value,
                "provider_subscription_id": subscription_id,
                "status": status,
            }
        )
    subscription.status = status
    subscription.cancel_at_period_end = cancel_at_period_end
    if current_period_end is not None:
        subscription.current_period_end = current_period_end
    if ended:
        subscription.ended_at = subscription.ended_at or utcnow()
        user = await UserRepository(session).get(subscription.user_id)
        if user is not None:
            still = await repository.plan_granted_by_others(subscription.user_id, subscription.id)
            user.plan = still or FREE_PLAN
    await session.flush()
    return subscription

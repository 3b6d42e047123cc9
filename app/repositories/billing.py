from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import CursorResult

from app.db.upsert import insert_if_absent
from app.models import (
    AdjustmentKind,
    CreditDebt,
    CreditLedgerEntry,
    IdempotencyRecord,
    Order,
    OrderAdjustment,
    OrderStatus,
    Plan,
    PlanPrice,
    Subscription,
)
from app.repositories.base import Repository


class PlanRepository(Repository[Plan]):
    model = Plan

    async def list_active(self) -> list[tuple[Plan, list[PlanPrice]]]:
        plans = list(
            await self.session.scalars(select(Plan).where(Plan.is_active.is_(True)).order_by(Plan.sort_order))
        )
        prices = await self.prices_for([plan.id for plan in plans])
        return [(plan, prices.get(plan.id, [])) for plan in plans]

    async def prices_for(self, plan_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[PlanPrice]]:
        grouped: dict[uuid.UUID, list[PlanPrice]] = {}
        if not plan_ids:
            return grouped
        result = await self.session.scalars(
            select(PlanPrice).where(PlanPrice.plan_id.in_(plan_ids)).order_by(PlanPrice.currency)
        )
        for price in result:
            grouped.setdefault(price.plan_id, []).append(price)
        return grouped

    async def get_by_code(self, code: str) -> Plan | None:
        return await self.session.scalar(select(Plan).where(Plan.code == code))

    async def list_all(self) -> list[tuple[Plan, list[PlanPrice]]]:
        """Every plan, retired ones too, in catalogue order."""
        plans = list(await self.session.scalars(select(Plan).order_by(Plan.sort_order, Plan.code)))
        prices = await self.prices_for([plan.id for plan in plans])
        return [(plan, prices.get(plan.id, [])) for plan in plans]

    async def code_taken(self, code: str) -> bool:
        # Case-insensitive on every database (MariaDB's collation already is).
        return (
            await self.session.scalar(select(Plan.id).where(func.lower(Plan.code) == code.lower()))
            is not None
        )

    async def replace_prices(self, plan_id: uuid.UUID, prices: dict[str, int]) -> None:
        """The plan's prices become exactly `prices` (currency -> minor units). Orders keep their own
        amount and currency, so changing a price never changes a past or open order."""
        await self.session.execute(delete(PlanPrice).where(PlanPrice.plan_id == plan_id))
        self.session.add_all(
            [
                PlanPrice(plan_id=plan_id, currency=currency, amount=amount)
                for currency, amount in prices.items()
            ]
        )
        await self.session.flush()

    async def set_price(self, plan_id: uuid.UUID, currency: str, amount: int) -> None:
        await self.session.execute(
            update(PlanPrice)
            .where(PlanPrice.plan_id == plan_id, PlanPrice.currency == currency)
            .values(amount=amount)
        )


# Subscription statuses (Stripe's and Dodo's) under which the subscriber keeps the plan.
RUNNING_SUBSCRIPTION_STATUSES = ("active", "trialing", "past_due")


class OrderRepository(Repository[Order]):
    model = Order

    async def get_for_user(self, order_id: uuid.UUID, user_id: uuid.UUID) -> Order | None:
        return await self.session.scalar(select(Order).where(Order.id == order_id, Order.user_id == user_id))

    async def get_by_provider_order_id(self, provider: str, provider_order_id: str) -> Order | None:
        return await self.session.scalar(
            select(Order).where(Order.provider == provider, Order.provider_order_id == provider_order_id)
        )

    async def get_by_provider_payment_id(self, provider: str, provider_payment_id: str) -> Order | None:
        return await self.session.scalar(
            select(Order).where(Order.provider == provider, Order.provider_payment_id == provider_payment_id)
        )

    async def mark_paid(self, order_id: uuid.UUID, payment_id: str | None, now: datetime) -> bool:
        """created/failed -> paid, once: concurrent fulfilments of one payment serialize on the row and
        only the first sees a status it may change."""
        values: dict[str, Any] = {"status": OrderStatus.paid.value, "paid_at": now, "updated_at": now}
        if payment_id is not None:
            values["provider_payment_id"] = payment_id
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(Order)
            .where(
                Order.id == order_id, Order.status.in_([OrderStatus.created.value, OrderStatus.failed.value])
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    async def mark_failed(
        self, order_id: uuid.UUID, reason: str, now: datetime, *, payment_id: str | None = None
    ) -> bool:
        """created -> failed (also failed -> failed when `payment_id`, the payment that failed, is given:
        an order may be attempted several times), once per change."""
        values: dict[str, Any] = {
            "status": OrderStatus.failed.value,
            "failure_reason": reason[:500],
            "updated_at": now,
        }
        statuses = [OrderStatus.created.value]
        if payment_id is not None:
            values["provider_payment_id"] = payment_id
            statuses.append(OrderStatus.failed.value)
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(Order)
            .where(Order.id == order_id, Order.status.in_(statuses))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    async def list_for_user(
        self, user_id: uuid.UUID, limit: int, status: OrderStatus | None = None
    ) -> list[Order]:
        statement = select(Order).where(Order.user_id == user_id)
        if status is not None:
            statement = statement.where(Order.status == status.value)
        result = await self.session.scalars(
            statement.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
        )
        return list(result)


# Pending adjustments are applied in this order: what the customer got back before what was disputed,
# and a dispute's opening before its decision.
_KIND_RANK = {AdjustmentKind.refund.value: 0, AdjustmentKind.chargeback.value: 1}


class OrderAdjustmentRepository(Repository[OrderAdjustment]):
    model = OrderAdjustment

    async def get_by_key(self, key: str) -> OrderAdjustment | None:
        return await self.session.scalar(select(OrderAdjustment).where(OrderAdjustment.key == key))

    async def record(self, values: dict[str, Any]) -> OrderAdjustment | None:
        """The new adjustment; None when one with its key was already recorded."""
        if not await insert_if_absent(self.session, OrderAdjustment, {"id": uuid.uuid4(), **values}):
            return None
        return await self.get_by_key(values["key"])

    async def refunded_by(self, order_id: uuid.UUID, payment_id: str | None) -> int:
        """What the refunds recorded for this order's payment add up to (minor units)."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(OrderAdjustment.amount), 0)).where(
                OrderAdjustment.order_id == order_id,
                OrderAdjustment.kind == AdjustmentKind.refund.value,
                OrderAdjustment.payment_id.is_(None)
                if payment_id is None
                else OrderAdjustment.payment_id == payment_id,
            )
        )
        return int(total or 0)

    async def pending(self, order_id: uuid.UUID) -> list[OrderAdjustment]:
        """The adjustments not applied yet, locked, refunds first, then openings, then decisions (each by
        arrival). Locking reads see what other transactions committed up to now."""
        rows = list(
            await self.session.scalars(
                select(OrderAdjustment)
                .where(OrderAdjustment.order_id == order_id, OrderAdjustment.applied_at.is_(None))
                .order_by(OrderAdjustment.created_at, OrderAdjustment.key)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        )
        return sorted(rows, key=lambda row: _KIND_RANK.get(row.kind, 2))


class SubscriptionRepository(Repository[Subscription]):
    model = Subscription

    async def get_by_provider_id(self, provider: str, provider_subscription_id: str) -> Subscription | None:
        return await self.session.scalar(
            select(Subscription).where(
                Subscription.provider == provider,
                Subscription.provider_subscription_id == provider_subscription_id,
            )
        )

    async def plan_granted_by_others(self, user_id: uuid.UUID, ended_id: uuid.UUID) -> str | None:
        """The plan (e.g. "pro") another of the user's subscriptions still grants: one not ended, whose
        status entitles it, newest first; None when there is none."""
        return await self.session.scalar(
            select(Plan.grants_plan)
            .join(Subscription, Subscription.plan_id == Plan.id)
            .where(
                Subscription.user_id == user_id,
                Subscription.id != ended_id,
                Subscription.ended_at.is_(None),
                Subscription.status.in_(RUNNING_SUBSCRIPTION_STATUSES),
                Plan.grants_plan.is_not(None),
            )
            .order_by(Subscription.created_at.desc(), Subscription.id.desc())
            .limit(1)
        )

    async def ensure(self, values: dict[str, Any]) -> Subscription:
        await insert_if_absent(self.session, Subscription, {"id": uuid.uuid4(), **values})
        subscription = await self.get_by_provider_id(values["provider"], values["provider_subscription_id"])
        assert subscription is not None
        return subscription


class CreditDebtRepository(Repository[CreditDebt]):
    model = CreditDebt

    async def record(self, values: dict[str, Any]) -> None:
        await insert_if_absent(self.session, CreditDebt, {"id": uuid.uuid4(), **values})

    async def list_for_user(self, user_id: uuid.UUID) -> list[CreditDebt]:
        return list(await self.session.scalars(select(CreditDebt).where(CreditDebt.user_id == user_id)))

    async def amount_owed(self, reference: str) -> int:
        """What is still owed under `reference` (0 when nothing, or when it was cancelled or settled)."""
        owed = await self.session.scalar(
            select(CreditDebt.amount).where(
                CreditDebt.reference == reference,
                CreditDebt.reason != "chargeback_won",
                CreditDebt.settled_at.is_(None),
            )
        )
        return int(owed or 0)

    async def forgive(self, reference: str, reason: str, now: datetime) -> bool:
        """The debt recorded under `reference` is no longer owed: it is settled (if it was not already) and
        its reason becomes `reason`. True only for the call that changed it, so the change happens once."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(CreditDebt)
            .where(CreditDebt.reference == reference, CreditDebt.reason != reason)
            .values(reason=reason, settled_at=func.coalesce(CreditDebt.settled_at, now))
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    async def references_with_reason(self, references: list[str], reason: str) -> set[str]:
        """Which of these debts now carry `reason` (e.g. were cancelled by a won dispute)."""
        if not references:
            return set()
        result = await self.session.scalars(
            select(CreditDebt.reference).where(
                CreditDebt.reference.in_(references), CreditDebt.reason == reason
            )
        )
        return set(result)


class InvoiceGrantRepository(Repository[CreditLedgerEntry]):
    """The ledger rows about one paid subscription invoice: its grant (idempotency key
    `<provider>_invoice:<id>`) and the refunds, chargebacks and give-backs written against it (their
    `reference` is that key). Reads only: every movement goes through app/services/credits.py."""

    model = CreditLedgerEntry

    async def lock_grant(self, key: str) -> CreditLedgerEntry | None:
        """The grant, its row locked until the transaction ends: refunds and disputes of one invoice queue
        here (on PostgreSQL and MySQL; SQLite serializes writers anyway), so each sees what the previous
        one took."""
        return await self.session.scalar(
            select(CreditLedgerEntry)
            .where(CreditLedgerEntry.idempotency_key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )

    async def written_against(self, account_id: uuid.UUID, grant_key: str) -> list[CreditLedgerEntry]:
        return list(
            await self.session.scalars(
                select(CreditLedgerEntry).where(
                    CreditLedgerEntry.account_id == account_id, CreditLedgerEntry.reference == grant_key
                )
            )
        )


def idempotency_key_digest(key: str) -> str:
    """What is stored of a client's Idempotency-Key: its SHA-256, so that keys compare byte for byte on
    every database (MariaDB's default collation would take 'abc', 'ABC' and 'abc ' for one key)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class IdempotencyRepository(Repository[IdempotencyRecord]):
    model = IdempotencyRecord

    async def claim(self, values: dict[str, Any]) -> bool:
        row = {"id": uuid.uuid4(), **values, "key": idempotency_key_digest(values["key"])}
        return await insert_if_absent(self.session, IdempotencyRecord, row)

    async def find(self, user_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
        return await self.session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == idempotency_key_digest(key)
            )
        )

    async def delete_expired(self, now: datetime) -> int:
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
        )
        return result.rowcount

    async def take_over(self, record_id: uuid.UUID, seen_created_at: datetime, now: datetime) -> bool:
        """Restart a claim as it was read (compare-and-set on its `created_at`): of two requests taking
        over the same dead claim, one wins."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(IdempotencyRecord)
            .where(IdempotencyRecord.id == record_id, IdempotencyRecord.created_at == seen_created_at)
            .values(created_at=now, status_code=None, response_body=None)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

"""A payment and a job submission for one account at the same moment both commit on PostgreSQL.

A job submission locks the user's row (`users.lock_open`, taken by everything that creates data for an
account), then reserves credits on the account's row. A payment's fulfilment moves the account's row
first (the grant), then inserts its tax invoice, whose foreign key to `users` takes a KEY SHARE lock on
the user's row. With the user's row locked FOR UPDATE that insert waited for the submission, which waited
for the account's row: PostgreSQL killed one of them as a deadlock (a 503 the mixed-load bench found).
The account lock is FOR NO KEY UPDATE, which a foreign key's KEY SHARE does not wait for.

PostgreSQL only: SQLite runs one writer at a time, and MariaDB's foreign-key check takes a shared lock
that any exclusive row lock blocks, so there the pattern still deadlocks: InnoDB rolls one of the two
back (the submission, answered 503 with nothing reserved)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.session import Database
from app.models import CreditAccount, CreditLedgerEntry, Order, OrderStatus, PlanKind
from app.services import credits
from app.services import users as users_service
from app.services.billing import orders
from tests.support.committed import cleanup, committed_user
from tests.support.payments import BASIC, BASIC_USD, BONUS

pytestmark = pytest.mark.postgres_only


async def _pending_order(database: Database, user_id: uuid.UUID) -> uuid.UUID:
    async with database.session_scope() as session:
        order = Order(
            user_id=user_id,
            provider="stripe",
            kind=PlanKind.credit_pack.value,
            credits=BASIC,
            amount=BASIC_USD,
            currency="USD",
            status=OrderStatus.created.value,
            provider_order_id=f"cs_test_{uuid.uuid4().hex}",
        )
        session.add(order)
        await session.flush()
        return order.id


async def _waiting_for_a_lock(engine: AsyncEngine, payment: asyncio.Task[None]) -> None:
    """Until the payment has committed or is waiting for a row lock (the submission's)."""
    for _ in range(400):
        if payment.done():
            return
        async with engine.connect() as connection:
            waiting = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the payment neither finished nor waited for a lock")


async def test_a_payment_and_a_job_submission_for_one_account_both_commit(
    engine: AsyncEngine, settings: Settings
) -> None:
    database = Database(engine)
    user = await committed_user(database, settings)
    order_id = await _pending_order(database, user.id)
    reservation = f"job:{uuid.uuid4().hex}"

    async def pay() -> None:
        async with database.session_scope() as session:
            order = await session.get(Order, order_id)
            assert order is not None
            assert await orders.fulfil(session, order, f"pi_{uuid.uuid4().hex}", settings=settings)

    try:
        async with database.session_scope() as submission:
            await users_service.lock_open(submission, user.id)  # as a job submission does first
            payment = asyncio.create_task(pay())
            await _waiting_for_a_lock(engine, payment)
            await credits.reserve(submission, user.id, 1000, reservation)
        await payment

        async with database.session_scope() as session:
            order = await session.get(Order, order_id)
            assert order is not None
            assert order.status == OrderStatus.paid.value
            account = await session.scalar(select(CreditAccount).where(CreditAccount.user_id == user.id))
            assert account is not None
            ledger = await session.scalar(
                select(func.sum(CreditLedgerEntry.amount)).where(CreditLedgerEntry.account_id == account.id)
            )
            assert account.balance == ledger == BONUS + BASIC - 1000
    finally:
        await cleanup(engine, [user.id], [])

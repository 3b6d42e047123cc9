"""The row queries of the reports, read through a server-side cursor: rows come from the database in
batches of `batch_size` (asyncpg cursor, MariaDB unbuffered cursor, SQLite's own stepping), so a report of
millions of rows never sits whole in memory.

Every statement selects labelled columns; app/services/reports.py names the same labels."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from typing import Any, TypeAlias

from sqlalchemy import Select, case, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import CreditAccount, CreditLedgerEntry, Job, JobStatus, Order, Plan, User
from app.repositories.analytics import Period

# A select of any columns (the reports pick theirs by label).
RowSelect: TypeAlias = Select[*tuple[Any, ...]]


class ReportKind(StrEnum):
    sales = "sales"
    usage = "usage"
    ledger = "ledger"
    users = "users"


def sales(period: Period) -> RowSelect:
    """Orders paid in the period, oldest first."""
    return (
        select(
            Order.paid_at.label("paid_at"),
            Order.id.label("order_id"),
            Order.user_id.label("user_id"),
            User.email.label("email"),
            Order.provider.label("provider"),
            Plan.code.label("plan"),
            Order.kind.label("kind"),
            Order.status.label("status"),
            Order.currency.label("currency"),
            Order.amount.label("amount"),
            Order.refunded_amount.label("refunded"),
            Order.tax_amount.label("tax"),
            Order.credits.label("credits"),
        )
        .join(User, User.id == Order.user_id)
        .outerjoin(Plan, Plan.id == Order.plan_id)
        .where(Order.paid_at >= period.since, Order.paid_at < period.until)
        .order_by(Order.paid_at, Order.id)
    )


def usage(period: Period) -> RowSelect:
    """Jobs created in the period, oldest first; only a completed job's credits were charged."""
    charged = case((Job.status == JobStatus.completed.value, Job.credits_reserved), else_=0)
    return (
        select(
            Job.created_at.label("created_at"),
            Job.id.label("job_id"),
            Job.user_id.label("user_id"),
            User.email.label("email"),
            Job.kind.label("kind"),
            Job.status.label("status"),
            Job.provider.label("provider"),
            charged.label("credits"),
            Job.time_taken_ms.label("time_taken_ms"),
            Job.error_code.label("error_code"),
        )
        .join(User, User.id == Job.user_id)
        .where(Job.created_at >= period.since, Job.created_at < period.until)
        .order_by(Job.created_at, Job.id)
    )


def ledger(period: Period, user_id: uuid.UUID | None = None) -> RowSelect:
    """Credit movements in the period, oldest first: everyone's, or one user's."""
    statement = (
        select(
            CreditLedgerEntry.created_at.label("created_at"),
            CreditLedgerEntry.id.label("entry_id"),
            CreditAccount.user_id.label("user_id"),
            User.email.label("email"),
            CreditLedgerEntry.reason.label("reason"),
            CreditLedgerEntry.amount.label("amount"),
            CreditLedgerEntry.balance_after.label("balance_after"),
            CreditLedgerEntry.reference.label("reference"),
        )
        .join(CreditAccount, CreditAccount.id == CreditLedgerEntry.account_id)
        .join(User, User.id == CreditAccount.user_id)
        .where(CreditLedgerEntry.created_at >= period.since, CreditLedgerEntry.created_at < period.until)
        .order_by(CreditLedgerEntry.created_at, CreditLedgerEntry.id)
    )
    if user_id is not None:
        statement = statement.where(CreditAccount.user_id == user_id)
    return statement


def users(period: Period) -> RowSelect:
    """Accounts created in the period, oldest first, with their balances."""
    return (
        select(
            User.created_at.label("created_at"),
            User.id.label("user_id"),
            User.email.label("email"),
            User.name.label("name"),
            User.plan.label("plan"),
            User.role.label("role"),
            User.email_verified_at.is_not(None).label("verified"),
            (~User.is_active).label("banned"),
            CreditAccount.balance.label("balance"),
            User.last_login_at.label("last_login_at"),
        )
        .outerjoin(CreditAccount, CreditAccount.user_id == User.id)
        .where(User.created_at >= period.since, User.created_at < period.until)
        .order_by(User.created_at, User.id)
    )


def statement_for(kind: ReportKind, period: Period) -> RowSelect:
    return {
        ReportKind.sales: sales,
        ReportKind.usage: usage,
        ReportKind.ledger: ledger,
        ReportKind.users: users,
    }[kind](period)


async def stream_batches(
    session: AsyncSession, statement: RowSelect, batch_size: int
) -> AsyncIterator[Sequence[Any]]:
    """The statement's rows in batches, from a server-side cursor."""
    result = await session.stream(statement.execution_options(yield_per=batch_size))
    async for batch in result.partitions():
        yield batch

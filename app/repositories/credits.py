from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeGuard, cast

from sqlalchemy import BindParameter, Select, Table, bindparam, insert, or_, select, union_all, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.base import utcnow
from app.db.upsert import insert_if_absent
from app.models import CreditAccount, CreditLedgerEntry, SignupBonusClaim, UsageRecord, User
from app.repositories.base import Executor, Repository

# Built once: the statement every client polls (its balance) skips SQLAlchemy's statement building.
_PLAN_AND_BALANCE = (
    select(User.plan, CreditAccount.balance)
    .outerjoin(CreditAccount, CreditAccount.user_id == User.id)
    .where(User.id == bindparam("user_id"))
)


# A movement by the owner's id, on the tables themselves (Core statements, built once): the charges' and
# jobs' hot path, where the ORM's statement building and unit of work cost more than the round trips.
_ACCOUNT_TABLE = cast(Table, CreditAccount.__table__)
_ACCOUNTS = _ACCOUNT_TABLE.c
_BALANCE_DELTA: BindParameter[int] = bindparam("balance_delta", type_=_ACCOUNTS.balance.type)
_RESERVED_DELTA: BindParameter[int] = bindparam("reserved_delta", type_=_ACCOUNTS.reserved.type)
_MOVE = (
    update(_ACCOUNT_TABLE)
    .where(
        _ACCOUNTS.user_id == bindparam("owner"),
        _ACCOUNTS.balance + _BALANCE_DELTA >= 0,
        _ACCOUNTS.reserved + _RESERVED_DELTA >= 0,
    )
    .values(
        balance=_ACCOUNTS.balance + _BALANCE_DELTA,
        reserved=_ACCOUNTS.reserved + _RESERVED_DELTA,
        updated_at=bindparam("now"),
    )
)
_MOVE_RETURNING = _MOVE.returning(_ACCOUNTS.id, _ACCOUNTS.balance)
_ACCOUNT_OF_USER = select(_ACCOUNTS.id, _ACCOUNTS.balance).where(_ACCOUNTS.user_id == bindparam("owner"))
_LEDGER_TABLE = cast(Table, CreditLedgerEntry.__table__)
_ADD_ENTRIES = insert(_LEDGER_TABLE)


def _spend_recorded() -> Select[Any]:
    """`move_by_user` spending, the spend-now's two ledger rows and the usage record in one statement
    (PostgreSQL's data-modifying CTEs): atomic alone, so it needs no transaction around it, and one round
    trip instead of five (BEGIN, UPDATE, INSERT, INSERT, COMMIT). The rows are written only when the
    UPDATE took the credits; it returns the account's id and new balance, or no row when refused."""
    spent = _MOVE_RETURNING.cte("spent")
    ledger = _LEDGER_TABLE.c

    def ledger_row(entry: str) -> dict[str, Any]:
        """A ledger row's values by column, the spend's account and balance among them."""
        return {
            "id": bindparam(f"{entry}_id", type_=ledger.id.type),
            "account_id": spent.c.id,
            "amount": bindparam(f"{entry}_amount", type_=ledger.amount.type),
            "reason": bindparam(f"{entry}_reason", type_=ledger.reason.type),
            "reference": bindparam("reference", type_=ledger.reference.type),
            "idempotency_key": bindparam(f"{entry}_key", type_=ledger.idempotency_key.type),
            "balance_after": spent.c.balance,
            "created_at": bindparam("now", type_=ledger.created_at.type),
        }

    hold, settle = ledger_row("hold"), ledger_row("settle")
    entries = insert(_LEDGER_TABLE).from_select(
        list(hold), union_all(select(*hold.values()), select(*settle.values()))
    )
    usage_table = cast(Table, UsageRecord.__table__)
    usage = usage_table.c
    usage_row = {
        "id": bindparam("usage_id", type_=usage.id.type),
        "user_id": bindparam("owner", type_=usage.user_id.type),
        "action": bindparam("usage_action", type_=usage.action.type),
        "credits": bindparam("usage_credits", type_=usage.credits.type),
        "object_id": bindparam("usage_object_id", type_=usage.object_id.type),
        "success": bindparam("usage_success", type_=usage.success.type),
        "created_at": bindparam("usage_created_at", type_=usage.created_at.type),
    }
    record = insert(usage_table).from_select(list(usage_row), select(*usage_row.values()).select_from(spent))
    return select(spent.c.id, spent.c.balance).add_cte(entries.cte("entries"), record.cte("record"))


_SPEND_RECORDED = _spend_recorded()


async def move_by_user(
    db: Executor, user_id: uuid.UUID, balance_delta: int, reserved_delta: int = 0
) -> tuple[uuid.UUID, int] | None:
    """Apply the deltas to the owner's account only if neither balance nor reserved would go negative, in
    one conditional UPDATE (concurrent movers serialize on the row and each re-checks the condition): the
    account's id and new balance, in the same round trip where the backend can return them. None when
    refused or there is no account."""
    values = {
        "owner": user_id,
        "balance_delta": balance_delta,
        "reserved_delta": reserved_delta,
        "now": utcnow(),
    }
    dialect = db.dialect if isinstance(db, AsyncConnection) else db.get_bind().dialect
    if dialect.update_returning:
        row = (await db.execute(_MOVE_RETURNING, values)).first()
        return None if row is None else (row[0], int(row[1]))
    result: CursorResult[Any] = await db.execute(_MOVE, values)  # type: ignore[assignment]
    if result.rowcount != 1:
        return None
    # This transaction holds the row lock now, so the read sees exactly the value it wrote.
    row = (await db.execute(_ACCOUNT_OF_USER, {"owner": user_id})).first()
    return None if row is None else (row[0], int(row[1]))


def spends_in_one_statement(db: Executor) -> TypeGuard[AsyncConnection]:
    """Whether `spend_recorded` can run here: on a Core connection (it brings no transaction of its own)
    to PostgreSQL."""
    return isinstance(db, AsyncConnection) and db.dialect.name == "postgresql"


async def spend_recorded(
    connection: AsyncConnection,
    user_id: uuid.UUID,
    amount: int,
    entries: tuple[dict[str, Any], dict[str, Any]],
    usage: dict[str, Any],
) -> tuple[uuid.UUID, int] | None:
    """A spend of `amount` (`move_by_user`) with its hold and settlement ledger `entries` (id, amount,
    reason, idempotency_key each, `reference` and `created_at` shared) and a `usage` record (a
    `usage_records` row, its owner the spender), all or nothing in one statement. None when refused."""
    hold, settle = entries
    values = {
        "owner": user_id,
        "balance_delta": -amount,
        "reserved_delta": 0,
        "now": hold["created_at"],
        "reference": hold["reference"],
    }
    for name, entry in (("hold", hold), ("settle", settle)):
        values.update(
            {
                f"{name}_id": entry["id"],
                f"{name}_amount": entry["amount"],
                f"{name}_reason": entry["reason"],
                f"{name}_key": entry["idempotency_key"],
            }
        )
    values.update(
        usage_id=usage["id"],
        usage_action=usage["action"],
        usage_credits=usage["credits"],
        usage_object_id=usage["object_id"],
        usage_success=usage["success"],
        usage_created_at=usage["created_at"],
    )
    row = (await connection.execute(_SPEND_RECORDED, values)).first()
    return None if row is None else (row[0], int(row[1]))


async def balance_by_user(db: Executor, user_id: uuid.UUID) -> int:
    row = (await db.execute(_ACCOUNT_OF_USER, {"owner": user_id})).first()
    return 0 if row is None else int(row[1])


async def add_entries(db: Executor, entries: list[dict[str, Any]]) -> None:
    """Ledger rows in one statement, no objects loaded (nothing reads them back in this transaction)."""
    await db.execute(_ADD_ENTRIES, entries)


async def plan_and_balance(reader: AsyncConnection, user_id: uuid.UUID) -> tuple[str, int] | None:
    """The account's plan and balance (None when the user is gone), on a reading connection."""
    row = (await reader.execute(_PLAN_AND_BALANCE, {"user_id": user_id})).first()
    return (row[0], row[1] or 0) if row is not None else None


class CreditRepository(Repository[CreditAccount]):
    model = CreditAccount

    async def get_by_user(self, user_id: uuid.UUID) -> CreditAccount | None:
        return await self.session.scalar(select(CreditAccount).where(CreditAccount.user_id == user_id))

    async def ensure_account(self, user_id: uuid.UUID) -> CreditAccount:
        account = await self.get_by_user(user_id)
        if account is not None:
            return account
        await insert_if_absent(
            self.session,
            CreditAccount,
            {"id": uuid.uuid4(), "user_id": user_id, "balance": 0, "reserved": 0, "updated_at": utcnow()},
        )
        account = await self.get_by_user(user_id)
        assert account is not None
        return account

    async def move(self, account_id: uuid.UUID, balance_delta: int, reserved_delta: int = 0) -> int | None:
        """Apply the deltas only if neither balance nor reserved would go negative, in one conditional
        UPDATE: concurrent spenders serialize on the row and each re-checks the condition, so the check
        cannot be raced on any backend. Returns the new balance, or None when refused."""
        statement = (
            update(CreditAccount)
            .where(
                CreditAccount.id == account_id,
                CreditAccount.balance + balance_delta >= 0,
                CreditAccount.reserved + reserved_delta >= 0,
            )
            .values(
                balance=CreditAccount.balance + balance_delta,
                reserved=CreditAccount.reserved + reserved_delta,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if self.session.get_bind().dialect.update_returning:
            returned = await self.session.scalar(statement.returning(CreditAccount.balance))
            return None if returned is None else int(returned)
        result: CursorResult[Any] = await self.session.execute(statement)  # type: ignore[assignment]
        if result.rowcount != 1:
            return None
        # This transaction holds the row lock now, so the read sees exactly the value it wrote.
        balance = await self.session.scalar(
            select(CreditAccount.balance)
            .where(CreditAccount.id == account_id)
            .execution_options(populate_existing=True)
        )
        return int(balance) if balance is not None else None

    async def current_balance(self, account_id: uuid.UUID) -> int:
        balance = await self.session.scalar(
            select(CreditAccount.balance).where(CreditAccount.id == account_id)
        )
        return int(balance or 0)

    async def get_entry_by_key(self, idempotency_key: str) -> CreditLedgerEntry | None:
        return await self.session.scalar(
            select(CreditLedgerEntry).where(CreditLedgerEntry.idempotency_key == idempotency_key)
        )

    async def add_entry(self, entry: CreditLedgerEntry) -> CreditLedgerEntry:
        self.session.add(entry)
        await self.session.flush()
        return entry

    async def list_entries(
        self, account_id: uuid.UUID, limit: int, before: tuple[datetime, uuid.UUID] | None = None
    ) -> list[CreditLedgerEntry]:
        """Newest first; `before` is the (created_at, id) of the last row of the previous page."""
        statement = select(CreditLedgerEntry).where(CreditLedgerEntry.account_id == account_id)
        if before is not None:
            created_at, entry_id = before
            statement = statement.where(
                or_(
                    CreditLedgerEntry.created_at < created_at,
                    (CreditLedgerEntry.created_at == created_at) & (CreditLedgerEntry.id < entry_id),
                )
            )
        statement = statement.order_by(CreditLedgerEntry.created_at.desc(), CreditLedgerEntry.id.desc())
        return list(await self.session.scalars(statement.limit(limit)))


class SignupBonusClaimRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(self, user_id: uuid.UUID, identity_hashes: list[str]) -> bool:
        """Records every identity as claimed by `user_id`; True only if none of them had been claimed
        before (by this or any earlier account). Race-free: the database decides each insert."""
        fresh = True
        for identity_hash in identity_hashes:
            values = {"identity_hash": identity_hash, "user_id": user_id, "created_at": utcnow()}
            fresh = await insert_if_absent(self.session, SignupBonusClaim, values) and fresh
        return fresh

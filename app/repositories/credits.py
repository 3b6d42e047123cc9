from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.base import utcnow
from app.db.upsert import insert_if_absent
from app.models import CreditAccount, CreditLedgerEntry, SignupBonusClaim, User
from app.repositories.base import Repository

# Built once: the statement every client polls (its balance) skips SQLAlchemy's statement building.
_PLAN_AND_BALANCE = (
    select(User.plan, CreditAccount.balance)
    .outerjoin(CreditAccount, CreditAccount.user_id == User.id)
    .where(User.id == bindparam("user_id"))
)


# A spend by the owner's id, on the tables themselves (Core statements, built once): the design charges'
# hot path, where the ORM's statement building and unit of work cost more than the round trips.
_ACCOUNT_TABLE = cast(Table, CreditAccount.__table__)
_ACCOUNTS = _ACCOUNT_TABLE.c
_SPEND = (
    update(_ACCOUNT_TABLE)
    .where(_ACCOUNTS.user_id == bindparam("owner"), _ACCOUNTS.balance >= bindparam("amount"))
    .values(balance=_ACCOUNTS.balance - bindparam("amount"), updated_at=bindparam("now"))
)
_SPEND_RETURNING = _SPEND.returning(_ACCOUNTS.id, _ACCOUNTS.balance)
_ACCOUNT_OF_USER = select(_ACCOUNTS.id, _ACCOUNTS.balance).where(_ACCOUNTS.user_id == bindparam("owner"))
_ADD_ENTRIES = insert(cast(Table, CreditLedgerEntry.__table__))


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

    async def spend_by_user(self, user_id: uuid.UUID, amount: int) -> tuple[uuid.UUID, int] | None:
        """`move` for a spend by the owner's id, the account's id and new balance in the same round trip
        where the backend can return them (None when refused or there is no account)."""
        values = {"owner": user_id, "amount": amount, "now": utcnow()}
        if self.session.get_bind().dialect.update_returning:
            row = (await self.session.execute(_SPEND_RETURNING, values)).first()
            return None if row is None else (row[0], int(row[1]))
        result: CursorResult[Any] = await self.session.execute(_SPEND, values)  # type: ignore[assignment]
        if result.rowcount != 1:
            return None
        # This transaction holds the row lock now, so the read sees exactly the value it wrote.
        row = (await self.session.execute(_ACCOUNT_OF_USER, {"owner": user_id})).first()
        return None if row is None else (row[0], int(row[1]))

    async def add_entries(self, entries: list[dict[str, Any]]) -> None:
        """Ledger rows in one statement, no objects loaded (nothing reads them back in this transaction)."""
        await self.session.execute(_ADD_ENTRIES, entries)

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

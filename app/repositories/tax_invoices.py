"""Tax invoices, the yearly counters their numbers come from, and buyers' billing profiles."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update

from app.db.upsert import insert_if_absent, insert_or_lock
from app.models import BillingProfile, InvoiceCounter, TaxInvoice
from app.repositories.base import Repository


class InvoiceCounterRepository(Repository[InvoiceCounter]):
    model = InvoiceCounter

    async def take_next(self, year: int) -> int:
        """The next number of `year`, counted in this transaction: the year's row (created if it is the
        first invoice of the year) stays locked until the transaction ends, so concurrent payments queue
        here, and a rollback gives the number back with the increment."""
        await insert_or_lock(
            self.session, InvoiceCounter, {"id": uuid.uuid4(), "year": year, "last_number": 0}, ("year",)
        )
        await self.session.execute(
            update(InvoiceCounter)
            .where(InvoiceCounter.year == year)
            .values(last_number=InvoiceCounter.last_number + 1)
            .execution_options(synchronize_session=False)
        )
        number = await self.session.scalar(
            select(InvoiceCounter.last_number).where(InvoiceCounter.year == year)
        )
        assert number is not None
        return int(number)


class TaxInvoiceRepository(Repository[TaxInvoice]):
    model = TaxInvoice

    async def get_by_order(self, order_id: uuid.UUID) -> TaxInvoice | None:
        return await self.session.scalar(select(TaxInvoice).where(TaxInvoice.order_id == order_id))

    async def numbers_of_year(self, year: int) -> list[int]:
        return list(
            await self.session.scalars(
                select(TaxInvoice.sequence).where(TaxInvoice.year == year).order_by(TaxInvoice.sequence)
            )
        )


class BillingProfileRepository(Repository[BillingProfile]):
    model = BillingProfile

    async def get_for_user(self, user_id: uuid.UUID) -> BillingProfile | None:
        return await self.session.scalar(select(BillingProfile).where(BillingProfile.user_id == user_id))

    async def save(self, user_id: uuid.UUID, values: dict[str, Any]) -> BillingProfile:
        """Create or replace the user's profile with `values` (name, country, vat_number,
        vat_verified_at); two saves at once leave one row, the later one's."""
        await insert_if_absent(self.session, BillingProfile, {"id": uuid.uuid4(), "user_id": user_id})
        await self.session.execute(
            update(BillingProfile)
            .where(BillingProfile.user_id == user_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        profile = await self.session.scalar(
            select(BillingProfile)
            .where(BillingProfile.user_id == user_id)
            .execution_options(populate_existing=True)
        )
        assert profile is not None
        return profile

    async def delete_for_user(self, user_id: uuid.UUID) -> None:
        profile = await self.get_for_user(user_id)
        if profile is not None:
            await self.session.delete(profile)

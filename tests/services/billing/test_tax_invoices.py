"""Tax invoices (app/services/billing/tax_invoices.py): the VAT rules, and numbers that are gap-free and
unique per year, taken in the transaction that marks the order paid.

The numbering tests that commit run on every configured database (TEST_DATABASE_URLS): payments at once,
each on its own connection and transaction, queue on the year's counter row; a payment whose transaction
rolls back gives its number back. They pay through the fake Stripe over HTTP (tests/support/payments.py).
The invoice endpoint and the buyer's details are tested in tests/routers/test_billing_invoices.py.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db.session import Database
from app.models import InvoiceCounter, Order, TaxInvoice, User
from app.services.billing import orders, tax_invoices
from app.services.billing.tax_invoices import TaxBasis, TaxLines, tax_lines, valid_vat_number
from tests.factories import bearer, make_order
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe
from tests.support.committed import cleanup, committed_user
from tests.support.databases import TestDatabase
from tests.support.payments import STRIPE_WEBHOOK, payment_settings, post_webhook, stripe_checkout

RATES = {"DE": Decimal(19), "FR": Decimal(20), "IE": Decimal("23"), "LU": Decimal("17")}
FR_VAT, DE_VAT, EL_VAT = "FR40303265045", "DE129273398", "EL094259216"


@pytest.fixture
def settings(
    database_url: str, fake_stripe: FakeStripe, fake_razorpay: FakeRazorpay, fake_dodo: FakeDodo
) -> Settings:
    return payment_settings(
        database_url, fake_stripe, fake_razorpay, fake_dodo, invoice_seller_country="DE", vat_rates=RATES
    )


# --- VAT numbers and the rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "compact"),
    [
        ("DE129273398", "DE129273398"),
        ("de 129.273.398", "DE129273398"),
        ("FR 40 303 265 045", "FR40303265045"),
        (EL_VAT, EL_VAT),
        ("DE123456789", None),  # wrong check digit
        ("DE12927339", None),  # too short
        ("FR12345678901", None),
        ("US123456789", None),  # no EU member state
        ("GB123456789", None),
        ("", None),
        ("129273398", None),  # no country prefix
    ],
)
def test_vat_numbers_are_checked_for_their_countrys_format(given: str, compact: str | None) -> None:
    assert valid_vat_number(given) == compact


def lines(amount: int, **overrides: Any) -> TaxLines:
    values: dict[str, Any] = {
        "reported_tax": None,
        "seller_country": "DE",
        "buyer_country": None,
        "buyer_vat_number": None,
        "rates": RATES,
    }
    values.update(overrides)
    return tax_lines(amount=amount, **values)


@pytest.mark.parametrize(
    ("case", "overrides", "expected"),
    [
        # The table's rate is inside the price: net = 599 / 1.19 = 503.36 -> 503.
        (
            "consumer in the seller's country",
            {"buyer_country": "DE"},
            TaxLines(503, 1900, 96, 599, TaxBasis.rate_table),
        ),
        (
            "consumer in another member state",
            {"buyer_country": "FR"},
            TaxLines(499, 2000, 100, 599, TaxBasis.rate_table),
        ),
        ("country unknown: the seller's", {}, TaxLines(503, 1900, 96, 599, TaxBasis.rate_table)),
        ("country not in the table", {"buyer_country": "US"}, TaxLines(599, 0, 0, 599, TaxBasis.rate_table)),
        (
            "business in another member state: reverse charge",
            {"buyer_country": "FR", "buyer_vat_number": FR_VAT},
            TaxLines(599, 0, 0, 599, TaxBasis.reverse_charge),
        ),
        (
            "Greek business (EL prefix, GR country)",
            {"buyer_country": "GR", "buyer_vat_number": EL_VAT},
            TaxLines(599, 0, 0, 599, TaxBasis.reverse_charge),
        ),
        (
            "business in the seller's country pays VAT",
            {"buyer_country": "DE", "buyer_vat_number": DE_VAT},
            TaxLines(503, 1900, 96, 599, TaxBasis.rate_table),
        ),
        (
            "a VAT number of another country than the buyer's",
            {"buyer_country": "FR", "buyer_vat_number": DE_VAT},
            TaxLines(499, 2000, 100, 599, TaxBasis.rate_table),
        ),
        (
            "a malformed VAT number",
            {"buyer_country": "FR", "buyer_vat_number": "FR12345678901"},
            TaxLines(499, 2000, 100, 599, TaxBasis.rate_table),
        ),
        (
            "seller outside the EU: no reverse charge",
            {"seller_country": "US", "buyer_country": "FR", "buyer_vat_number": FR_VAT},
            TaxLines(499, 2000, 100, 599, TaxBasis.rate_table),
        ),
        (
            "no seller country configured",
            {"seller_country": None, "buyer_country": "FR", "buyer_vat_number": FR_VAT},
            TaxLines(499, 2000, 100, 599, TaxBasis.rate_table),
        ),
        # Stripe Tax added its tax on top of our price: its figure wins over every rule.
        (
            "Stripe Tax, the table's rate",
            {"reported_tax": 120, "buyer_country": "FR"},
            TaxLines(599, 2000, 120, 719, TaxBasis.provider),
        ),
        (
            "Stripe Tax, a rate the table does not have",
            {"reported_tax": 45, "buyer_country": "US"},
            TaxLines(599, 751, 45, 644, TaxBasis.provider),
        ),
        (
            "Stripe Tax, none due",
            {"reported_tax": 0, "buyer_country": "FR", "buyer_vat_number": FR_VAT},
            TaxLines(599, 0, 0, 599, TaxBasis.provider),
        ),
    ],
)
def test_the_vat_of_an_invoice(case: str, overrides: dict[str, Any], expected: TaxLines) -> None:
    assert lines(599, **overrides) == expected


@pytest.mark.parametrize("amount", [1, 2, 99, 599, 1_099, 49_900, 10**12])
@pytest.mark.parametrize("country", ["DE", "FR", "IE", "LU", "US"])
def test_net_plus_vat_is_always_the_price_paid(amount: int, country: str) -> None:
    result = lines(amount, buyer_country=country)
    assert result.net + result.vat == result.gross == amount
    assert result.net >= 0
    assert result.vat >= 0


# --- numbers, in one transaction --------------------------------------------------------------------


async def paid_invoice(session: AsyncSession, settings: Settings, user: User, when: datetime) -> TaxInvoice:
    order = await make_order(session, user, status="paid", paid_at=when)
    return await tax_invoices.issue(session, settings, order, when)


async def test_numbers_follow_each_other_within_a_year_and_start_again_at_one_the_next(
    session: AsyncSession, settings: Settings, user: User
) -> None:
    # Years no other test issues invoices in.
    first_year = [await paid_invoice(session, settings, user, datetime(2098, 12, 31, 23, 59, tzinfo=UTC))]
    first_year.append(
        await paid_invoice(session, settings, user, datetime(2098, 12, 31, 23, 59, 59, tzinfo=UTC))
    )
    next_year = await paid_invoice(session, settings, user, datetime(2099, 1, 1, tzinfo=UTC))

    assert [invoice.number for invoice in first_year] == ["2098-000001", "2098-000002"]
    assert next_year.number == "2099-000001"
    assert (next_year.year, next_year.sequence) == (2099, 1)


async def test_an_invoice_is_a_snapshot_of_the_seller_the_buyer_and_the_order(
    session: AsyncSession, settings: Settings, user: User
) -> None:
    order = await make_order(
        session, user, billing_country="FR", customer_tax_ids=[{"type": "eu_vat", "value": FR_VAT}]
    )
    seller = settings.model_copy(
        update={
            "invoice_seller_name": "Pixforge GmbH",
            "invoice_seller_address": "Hauptstr. 1; 10115 Berlin",
            "invoice_seller_vat_id": DE_VAT,
        }
    )

    invoice = await tax_invoices.issue(session, seller, order)

    assert (invoice.order_id, invoice.user_id) == (order.id, user.id)
    assert (invoice.seller_name, invoice.seller_address) == ("Pixforge GmbH", "Hauptstr. 1; 10115 Berlin")
    assert (invoice.seller_vat_id, invoice.seller_country) == (DE_VAT, "DE")
    assert (invoice.buyer_email, invoice.buyer_country, invoice.buyer_vat_number) == (
        user.email,
        "FR",
        FR_VAT,
    )
    assert (invoice.currency, invoice.net_amount, invoice.vat_amount, invoice.gross_amount) == (
        "USD",
        599,
        0,
        599,
    )
    assert invoice.tax_basis == "reverse_charge"
    assert invoice.description == "Basic: 100 credits"


# --- numbers, committed: rollbacks and payments at once (every database) ----------------------------


async def committed_numbers(engine: AsyncEngine, order_ids: list[str]) -> list[tuple[int, int]]:
    """(year, sequence) of these orders' invoices, in order."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(TaxInvoice.year, TaxInvoice.sequence)
            .where(TaxInvoice.order_id.in_([uuid.UUID(order_id) for order_id in order_ids]))
            .order_by(TaxInvoice.year, TaxInvoice.sequence)
        )
        return [(int(year), int(sequence)) for year, sequence in rows]


async def counter(engine: AsyncEngine, year: int) -> int:
    async with engine.connect() as connection:
        return int(
            await connection.scalar(select(InvoiceCounter.last_number).where(InvoiceCounter.year == year))
            or 0
        )


async def paid_at_stripe(
    client: httpx.AsyncClient, fake: FakeStripe, auth: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    """A pack bought over HTTP and paid at Stripe: (our order id, its checkout.session.completed)."""
    created = await stripe_checkout(client, auth)
    return str(created["order_id"]), fake.checkout_completed(created["session_id"])


async def test_a_payment_rolled_back_gives_its_number_back(
    committing: tuple[FastAPI, Database],
    engine: AsyncEngine,
    settings: Settings,
    fake_stripe: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second payment fails after its invoice took a number (the credit grant breaks): its
    transaction rolls back, and the next payment gets that number. Redelivered, the failed one gets
    the one after: no gap, no duplicate."""
    app, database = committing
    user = await committed_user(database, settings)
    events: list[tuple[str, str]] = []
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            auth = bearer(app.state.container, user)
            purchases = [await paid_at_stripe(client, fake_stripe, auth) for _ in range(3)]
            events = [("stripe", str(event["id"])) for _, event in purchases]
            (first, first_paid), (broken, broken_paid), (third, third_paid) = purchases

            assert (
                await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(first_paid))
            ).status_code == 200
            with monkeypatch.context() as patch:

                async def grant_fails(*_args: Any, **_kwargs: Any) -> None:
                    raise RuntimeError("ledger unavailable")

                patch.setattr("app.services.credits.grant", grant_fails)
                failed = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(broken_paid))
            assert failed.status_code == 500, failed.text
            year = (await committed_numbers(engine, [first]))[0][0]
            taken = await counter(engine, year)
            assert await committed_numbers(engine, [broken]) == []

            assert (
                await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(third_paid))
            ).status_code == 200
            again = await post_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(broken_paid))
            assert again.status_code == 200, again.text

            [(_, one)] = await committed_numbers(engine, [first])
            [(_, two)] = await committed_numbers(engine, [third])
            [(_, three)] = await committed_numbers(engine, [broken])
            assert (one, two, three) == (taken, taken + 1, taken + 2)
            assert await counter(engine, year) == taken + 2
    finally:
        await cleanup(engine, [user.id], events)


PAYERS = 6


async def test_payments_at_once_get_consecutive_unique_numbers(
    committing: tuple[FastAPI, Database],
    engine: AsyncEngine,
    settings: Settings,
    fake_stripe: FakeStripe,
    test_database: TestDatabase,
) -> None:
    """Several customers' payments confirmed at the same moment, each on its own connection: they
    queue on the year's counter row, so their numbers are one run without a gap or a repeat, and the
    counter ends on the last. On PostgreSQL each is accepted the first time (the unique number is not
    left to a constraint violation and a retry); elsewhere a delivery refused for a transient database
    error (an InnoDB deadlock victim, SQLite busy) is delivered again, as providers do."""
    app, database = committing
    users = [await committed_user(database, settings) for _ in range(PAYERS)]
    events: list[tuple[str, str]] = []
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            purchases = [
                await paid_at_stripe(client, fake_stripe, bearer(app.state.container, u)) for u in users
            ]
            events = [("stripe", str(event["id"])) for _, event in purchases]
            deliveries = [fake_stripe.deliver(event) for _, event in purchases]

            answers = await asyncio.gather(*(post_webhook(client, STRIPE_WEBHOOK, d) for d in deliveries))
            for delivery, answer in zip(deliveries, answers, strict=True):
                if answer.status_code != 200:
                    assert test_database.id != "postgresql", answer.text
                    assert answer.status_code in (500, 503), answer.text
                    assert (await post_webhook(client, STRIPE_WEBHOOK, delivery)).status_code == 200

            numbers = await committed_numbers(engine, [order_id for order_id, _ in purchases])
            assert len(numbers) == PAYERS
            [year] = {year for year, _ in numbers}
            sequences = [sequence for _, sequence in numbers]
            assert sequences == list(range(sequences[0], sequences[0] + PAYERS))
            assert await counter(engine, year) == sequences[-1]
    finally:
        await cleanup(engine, [u.id for u in users], events)


async def test_an_order_paid_twice_over_has_one_invoice(
    session: AsyncSession, settings: Settings, user: User
) -> None:
    order = await make_order(session, user)

    assert await orders.fulfil(session, order, "pay_1", settings=settings) is True
    assert await orders.fulfil(session, order, "pay_1", settings=settings) is False

    session.expunge_all()
    invoices = list(await session.scalars(select(TaxInvoice).where(TaxInvoice.order_id == order.id)))
    assert len(invoices) == 1
    assert (await session.get(Order, order.id)).status == "paid"  # type: ignore[union-attr]

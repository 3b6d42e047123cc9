"""GET /credits/transactions/export: a user's own credit movements as CSV or a PDF statement, and never
anyone else's."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from tests.factories import bearer
from tests.support.analytics import PERIOD, seed_march
from tests.support.http import assert_error

URL = "/api/v1/credits/transactions/export"


async def test_a_user_downloads_only_their_own_movements_as_csv(
    client: httpx.AsyncClient, session: AsyncSession, container: Container
) -> None:
    seeded = await seed_march(session)
    response = await client.get(URL, headers=bearer(container, seeded.users["u2"]), params=PERIOD)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="pixforge-transactions-20250303-20250317.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["created_at", "entry_id", "reason", "amount", "balance_after", "reference"]
    assert [row["entry_id"] for row in rows] == [str(entry.id) for entry in seeded.ledger["u2"]]
    assert [(row["reason"], Decimal(row["amount"])) for row in rows] == [
        ("signup_bonus", Decimal(10)),
        ("purchase", Decimal(50)),
        ("refund", Decimal(-50)),
    ]
    others = [entry.reference for name, entries in seeded.ledger.items() if name != "u2" for entry in entries]
    assert not any(reference in response.text for reference in others)
    assert seeded.users["u1"].email not in response.text


async def test_the_default_period_reaches_back_and_includes_today(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.get(URL, headers=auth)
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(row["reason"], row["amount"]) for row in rows] == [("signup_bonus", "10.000")]


async def test_a_pdf_statement_with_totals(
    client: httpx.AsyncClient, session: AsyncSession, container: Container
) -> None:
    seeded = await seed_march(session)
    params = {**PERIOD, "format": "pdf"}
    response = await client.get(URL, headers=bearer(container, seeded.users["u1"]), params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert "Pixforge - Credit transactions" in text
    # u1 in the period: 10 + 100 - 1 + 0 - 1 + 1 + 2.5 - 0.5 - 3
    assert "Rows: 9" in text
    assert "Total: amount 108.000" in text
    assert "chargeback" in text
    assert all(entry.reference not in text for entry in seeded.ledger["u2"])


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"format": "xlsx"}, 422, "validation_error"),  # CSV or PDF only for users
        ({"from": PERIOD["to"], "to": PERIOD["from"]}, 422, "invalid_period"),
        # Periods at the edges of the calendar (found by the fuzzer: date arithmetic overflowed, 500)
        ({"to": "0001-01-01T00:00:00Z"}, 422, "invalid_period"),
        ({"to": "0001-01-01T00:00:00+23:59"}, 422, "invalid_period"),
    ],
)
async def test_bad_requests_are_refused(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, str], status: int, error: str
) -> None:
    assert_error(await client.get(URL, headers=auth, params=params), status, error)


async def test_anonymous_callers_are_refused(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(URL), 401, "unauthenticated")


@pytest.mark.parametrize(
    "params", [{"to": "0001-01-01"}, {"to": "9999-12-31"}, {"from": "9999-12-31"}, {"from": "9999-12-20"}]
)
async def test_usage_periods_beyond_the_calendar_are_refused(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, str]
) -> None:
    """Found by the fuzzer: the default bound or the day after `to` overflowed the calendar (500)."""
    response = await client.get("/api/v1/users/me/usage", headers=auth, params=params)
    assert_error(response, 422, "invalid_period")

"""GET /admin/reports/{kind}: every format parsed back as a client would (csv, json, openpyxl, pypdf) and
its rows and totals compared with the seeded fortnight (tests/support/analytics.py)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from decimal import Decimal

import httpx
import openpyxl
import pytest
from pypdf import PdfReader
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from tests.factories import bearer, make_user
from tests.support.analytics import PERIOD, seed_march
from tests.support.http import assert_error

URL = "/api/v1/admin/reports"


@pytest.fixture
async def admin_headers(session: AsyncSession, settings: Settings, container: Container) -> dict[str, str]:
    return bearer(container, await make_user(session, settings, role="admin"))


async def _get(client: httpx.AsyncClient, headers: dict[str, str], kind: str, fmt: str) -> httpx.Response:
    response = await client.get(f"{URL}/{kind}", headers=headers, params={**PERIOD, "format": fmt})
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    extension = {"json": "jsonl"}.get(fmt, fmt)
    assert disposition == f'attachment; filename="pixforge-{kind}-20250303-20250317.{extension}"'
    return response


async def test_sales_as_csv(
    client: httpx.AsyncClient, session: AsyncSession, admin_headers: dict[str, str]
) -> None:
    seeded = await seed_march(session)
    response = await _get(client, admin_headers, "sales", "csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    # Orders paid in the period, oldest first; the failed one and the one paid before are not sales.
    assert [row["order_id"] for row in rows] == [str(seeded.orders[name].id) for name in ("o1", "o2", "o3")]
    by_currency: dict[str, list[int]] = {}
    for row in rows:
        amount, refunded = by_currency.setdefault(row["currency"], [0, 0])
        by_currency[row["currency"]] = [amount + int(row["amount"]), refunded + int(row["refunded"])]
    assert by_currency == {"USD": [2_998, 500], "INR": [49_900, 49_900]}
    assert sum(Decimal(row["credits"]) for row in rows) == Decimal(350)
    assert rows[0]["paid_at"] == "2025-03-03T11:00:00+00:00"
    assert rows[0]["email"] == seeded.users["u1"].email


async def test_ledger_as_json_lines(
    client: httpx.AsyncClient, session: AsyncSession, admin_headers: dict[str, str]
) -> None:
    await seed_march(session)
    response = await _get(client, admin_headers, "ledger", "json")
    assert response.headers["content-type"] == "application/x-ndjson"
    records = [json.loads(line) for line in response.text.splitlines()]
    assert len(records) == 13
    # 10 + 100 - 1 + 0 - 1 + 1 + 10 + 50 - 50 + 2.5 - 0.5 + 10 - 3
    assert sum(Decimal(str(record["amount"])) for record in records) == Decimal(128)
    assert [record["reason"] for record in records[:2]] == ["signup_bonus", "purchase"]
    assert datetime.fromisoformat(records[0]["created_at"]) == datetime.fromisoformat(
        "2025-03-03T10:00:00+00:00"
    )


async def test_usage_as_xlsx_has_typed_cells_and_totals(
    client: httpx.AsyncClient, session: AsyncSession, admin_headers: dict[str, str]
) -> None:
    await seed_march(session)
    response = await _get(client, admin_headers, "usage", "xlsx")
    assert response.headers["content-type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    header, *rest = [list(row) for row in sheet.iter_rows(values_only=True)]
    column = {name: index for index, name in enumerate(header)}
    rows = [row for row in rest if row[0] is not None and row[0] != "Total"]
    (totals,) = [row for row in rest if row[0] == "Total"]
    assert len(rows) == 7
    first = rows[0]
    assert first[column["created_at"]] == datetime(2025, 3, 3, 12, 0)  # a date cell, not text
    assert first[column["kind"]] == "remove_background"
    assert first[column["time_taken_ms"]] == 100  # a number cell
    assert isinstance(first[column["credits"]], int | float)
    # Only completed jobs were charged: 4 x 1 + 0.2.
    assert sum(row[column["credits"]] or 0 for row in rows) == pytest.approx(4.2)
    assert totals[column["credits"]] == pytest.approx(4.2)


async def test_users_as_pdf_with_title_period_totals_and_table(
    client: httpx.AsyncClient, session: AsyncSession, admin_headers: dict[str, str]
) -> None:
    seeded = await seed_march(session)
    response = await _get(client, admin_headers, "users", "pdf")
    assert response.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert "Pixforge - New users" in text
    assert "Period: 2025-03-03 00:00 to 2025-03-17 00:00 UTC" in text
    assert "Rows: 3" in text
    assert "Total: balance 127.000" in text  # 107 + 10 + 10
    for name in ("u1", "u2", "u3"):
        assert seeded.users[name].email in text
    assert seeded.users["old"].email not in text


async def test_sales_pdf_totals_are_per_currency_and_the_table_is_capped(
    app: object,
    client: httpx.AsyncClient,
    session: AsyncSession,
    admin_headers: dict[str, str],
    settings: Settings,
) -> None:
    await seed_march(session)
    settings.reports_pdf_max_rows = 2
    response = await _get(client, admin_headers, "sales", "pdf")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert "Total INR: amount 49900, refunded 49900" in text
    assert "Total USD: amount 2998, refunded 500" in text
    assert "The table lists the first 2 rows." in text


async def test_an_empty_period_gives_a_header_only(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    params = {"from": "2001-01-01T00:00:00Z", "to": "2001-02-01T00:00:00Z"}
    response = await client.get(f"{URL}/ledger", headers=admin_headers, params=params)
    assert response.status_code == 200
    assert response.text == "created_at,entry_id,user_id,email,reason,amount,balance_after,reference\r\n"


@pytest.mark.parametrize(
    ("path", "params", "error"),
    [
        ("sales", {**PERIOD, "format": "docx"}, "validation_error"),
        ("invoices", PERIOD, "validation_error"),
        ("sales", {"from": PERIOD["to"], "to": PERIOD["from"]}, "invalid_period"),
        ("usage", {"from": "1990-01-01T00:00:00Z", "to": PERIOD["to"]}, "invalid_period"),  # too long
    ],
)
async def test_bad_requests_are_refused_before_any_file(
    client: httpx.AsyncClient, admin_headers: dict[str, str], path: str, params: dict[str, str], error: str
) -> None:
    response = await client.get(f"{URL}/{path}", headers=admin_headers, params=params)
    assert "content-disposition" not in response.headers
    assert_error(response, 422, error)

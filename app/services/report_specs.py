"""What each report holds: its columns (typed: how a database value becomes a cell), its title, and the
totals kept over its rows. The files are written by app/services/reports.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from app.repositories.reports import ReportKind
from app.services.credits import to_credits


class ReportFormat(StrEnum):
    csv = "csv"
    json = "json"
    xlsx = "xlsx"
    pdf = "pdf"


CONTENT_TYPES = {
    ReportFormat.csv: "text/csv; charset=utf-8",
    ReportFormat.json: "application/x-ndjson",
    ReportFormat.xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ReportFormat.pdf: "application/pdf",
}
EXTENSIONS = {
    ReportFormat.csv: "csv",
    ReportFormat.json: "jsonl",
    ReportFormat.xlsx: "xlsx",
    ReportFormat.pdf: "pdf",
}


class ColumnType(StrEnum):
    text = "text"
    integer = "integer"  # a count or minor units of money
    credits = "credits"  # millicredits in the database, decimal credits in the file
    timestamp = "timestamp"
    boolean = "boolean"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = ColumnType.text
    total: bool = False  # summed in the totals
    in_pdf: bool = True  # ids are left out of the PDF's table (too wide to read)
    width: float = 1.0  # relative width in the PDF


@dataclass(frozen=True)
class ReportSpec:
    title: str
    columns: tuple[Column, ...]
    # Totals are kept per value of this column (money in several currencies does not add up).
    total_by: str | None = None


_ID = ColumnType.text
SPECS: dict[ReportKind, ReportSpec] = {
    ReportKind.sales: ReportSpec(
        "Sales",
        (
            Column("paid_at", ColumnType.timestamp, width=1.6),
            Column("order_id", _ID, in_pdf=False),
            Column("user_id", _ID, in_pdf=False),
            Column("email", width=2.4),
            Column("provider"),
            Column("plan"),
            Column("kind", width=1.2),
            Column("status"),
            Column("currency", width=0.7),
            Column("amount", ColumnType.integer, total=True),
            Column("refunded", ColumnType.integer, total=True),
            Column("tax", ColumnType.integer, total=True),
            Column("credits", ColumnType.credits, total=True),
        ),
        total_by="currency",
    ),
    ReportKind.usage: ReportSpec(
        "Usage",
        (
            Column("created_at", ColumnType.timestamp, width=1.6),
            Column("job_id", _ID, in_pdf=False),
            Column("user_id", _ID, in_pdf=False),
            Column("email", width=2.4),
            Column("kind", width=1.5),
            Column("status", width=1.1),
            Column("provider"),
            Column("credits", ColumnType.credits, total=True),
            Column("time_taken_ms", ColumnType.integer),
            Column("error_code", width=1.4),
        ),
    ),
    ReportKind.ledger: ReportSpec(
        "Credits ledger",
        (
            Column("created_at", ColumnType.timestamp, width=1.6),
            Column("entry_id", _ID, in_pdf=False),
            Column("user_id", _ID, in_pdf=False),
            Column("email", width=2.4),
            Column("reason", width=1.4),
            Column("amount", ColumnType.credits, total=True),
            Column("balance_after", ColumnType.credits),
            Column("reference", width=2.4),
        ),
    ),
    ReportKind.users: ReportSpec(
        "New users",
        (
            Column("created_at", ColumnType.timestamp, width=1.6),
            Column("user_id", _ID, in_pdf=False),
            Column("email", width=2.4),
            Column("name", width=1.4),
            Column("plan"),
            Column("role", width=0.7),
            Column("verified", ColumnType.boolean, width=0.7),
            Column("banned", ColumnType.boolean, width=0.7),
            Column("balance", ColumnType.credits, total=True),
            Column("last_login_at", ColumnType.timestamp, width=1.6),
        ),
    ),
}
# A user's own statement: their movements, without the columns that name the account.
TRANSACTIONS_SPEC = ReportSpec(
    "Credit transactions",
    tuple(column for column in SPECS[ReportKind.ledger].columns if column.name not in {"user_id", "email"}),
)


def cell_value(column: Column, raw: Any) -> Any:
    """A database value as the file holds it (None stays None)."""
    if raw is None:
        return None
    if column.type is ColumnType.credits:
        return to_credits(int(raw))
    if column.type is ColumnType.integer:
        return int(raw)
    if column.type is ColumnType.boolean:
        return bool(raw)
    if column.type is ColumnType.timestamp:
        value: datetime = raw
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(raw, uuid.UUID):
        return str(raw)
    return str(raw)


@dataclass
class Totals:
    rows: int = 0
    # group (the `total_by` column's value, or "" without one) -> column -> sum
    sums: dict[str, dict[str, Decimal]] = field(default_factory=dict)

    def add(self, spec: ReportSpec, record: dict[str, Any]) -> None:
        self.rows += 1
        group = str(record.get(spec.total_by) or "") if spec.total_by else ""
        sums = self.sums.setdefault(group, {})
        for column in spec.columns:
            if column.total and record[column.name] is not None:
                sums[column.name] = sums.get(column.name, Decimal(0)) + Decimal(record[column.name])

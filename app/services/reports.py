"""Reports as files, streamed: sales, usage, ledger and users for admins, and a user's own transactions.

Rows come from a server-side cursor in batches (app/repositories/reports.py) and leave as they come:
- CSV and JSON lines: each batch is encoded and sent, nothing is kept;
- XLSX: xlsxwriter in constant_memory mode writes each row to a temporary file as it arrives (typed cells:
  numbers as numbers, timestamps as Excel dates); the finished workbook is sent from disk;
- PDF (fpdf2): title, period, totals and a table of at most `reports_pdf_max_rows` rows (a PDF is read,
  not imported); the totals still cover every row.
The writers that burn CPU (xlsxwriter, fpdf2) run in a worker thread, batch by batch, so a large report does
not stall the event loop. The report reads in its own session (read-only: on SQLite it takes no write
lock), not the request's, which is committed and closed before the body starts. Each report's columns
and totals are app/services/report_specs.py's.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import xlsxwriter
from fpdf import FPDF
from fpdf.fonts import FontFace

from app.container import Container
from app.db.session import SQLITE_READ_ONLY
from app.repositories import reports as report_queries
from app.repositories.analytics import Period
from app.repositories.reports import ReportKind
from app.services.report_specs import (
    CONTENT_TYPES,
    EXTENSIONS,
    SPECS,
    TRANSACTIONS_SPEC,
    Column,
    ColumnType,
    ReportFormat,
    ReportSpec,
    Totals,
    cell_value,
)

__all__ = ["CONTENT_TYPES", "Report", "ReportFormat", "ReportKind", "open_report", "user_transactions_report"]

BATCH_SIZE = 2000
_FILE_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Report:
    filename: str
    content_type: str
    body: AsyncIterator[bytes]


def open_report(
    container: Container,
    kind: ReportKind,
    report_format: ReportFormat,
    period: Period,
    pdf_max_rows: int,
) -> Report:
    """A report of the period, ready to stream (the query runs when the body is read)."""
    spec = SPECS[kind]
    statement = report_queries.statement_for(kind, period)
    return _report(container, f"pixforge-{kind.value}", spec, statement, report_format, period, pdf_max_rows)


def user_transactions_report(
    container: Container,
    user_id: uuid.UUID,
    report_format: ReportFormat,
    period: Period,
    pdf_max_rows: int,
) -> Report:
    """The caller's own credit movements: only rows of their account."""
    statement = report_queries.ledger(period, user_id=user_id)
    return _report(
        container, "pixforge-transactions", TRANSACTIONS_SPEC, statement, report_format, period, pdf_max_rows
    )


def _report(
    container: Container,
    stem: str,
    spec: ReportSpec,
    statement: Any,
    report_format: ReportFormat,
    period: Period,
    pdf_max_rows: int,
) -> Report:
    span = f"{period.since:%Y%m%d}-{period.until:%Y%m%d}"
    records = _records(container, spec, statement)
    writer: Callable[..., AsyncIterator[bytes]] = {
        ReportFormat.csv: _csv,
        ReportFormat.json: _json_lines,
        ReportFormat.xlsx: _xlsx,
        ReportFormat.pdf: _pdf,
    }[report_format]
    body = writer(spec, records, period, pdf_max_rows)
    return Report(f"{stem}-{span}.{EXTENSIONS[report_format]}", CONTENT_TYPES[report_format], body)


async def _records(
    container: Container, spec: ReportSpec, statement: Any
) -> AsyncIterator[list[dict[str, Any]]]:
    async with container.database.sessionmaker() as session:
        await session.connection(execution_options={SQLITE_READ_ONLY: True})
        async for batch in report_queries.stream_batches(session, statement, BATCH_SIZE):
            yield [
                {column.name: cell_value(column, row._mapping[column.name]) for column in spec.columns}
                for row in batch
            ]


# --- CSV and JSON lines: encoded batch by batch -------------------------------------------------------


def _csv_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


async def _csv(
    spec: ReportSpec, records: AsyncIterator[list[dict[str, Any]]], period: Period, pdf_max_rows: int
) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([column.name for column in spec.columns])
    yield buffer.getvalue().encode()
    async for batch in records:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([[_csv_text(record[column.name]) for column in spec.columns] for record in batch])
        yield buffer.getvalue().encode()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


async def _json_lines(
    spec: ReportSpec, records: AsyncIterator[list[dict[str, Any]]], period: Period, pdf_max_rows: int
) -> AsyncIterator[bytes]:
    async for batch in records:
        lines = [
            json.dumps({name: _json_value(value) for name, value in record.items()}, ensure_ascii=False)
            for record in batch
        ]
        yield ("\n".join(lines) + "\n").encode()


# --- XLSX: constant memory, typed cells ----------------------------------------------------------------


class _XlsxWriter:
    """One worksheet written row by row (constant_memory keeps only the current row in memory)."""

    def __init__(self, path: str, spec: ReportSpec) -> None:
        self.spec = spec
        self.workbook = xlsxwriter.Workbook(
            path, {"constant_memory": True, "tmpdir": os.path.dirname(path), "remove_timezone": True}
        )
        self.sheet = self.workbook.add_worksheet(spec.title[:31])
        self.bold = self.workbook.add_format({"bold": True})
        self.when = self.workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.decimal = self.workbook.add_format({"num_format": "0.000"})
        for index, column in enumerate(spec.columns):
            self.sheet.write_string(0, index, column.name, self.bold)
            self.sheet.set_column(index, index, 20 if column.type is ColumnType.timestamp else 14)
        self.row = 1

    def write(self, batch: list[dict[str, Any]]) -> None:
        for record in batch:
            self._write_row(record)

    def _write_row(self, record: dict[str, Any]) -> None:
        for index, column in enumerate(self.spec.columns):
            value = record[column.name]
            if value is None:
                continue
            if column.type is ColumnType.timestamp:
                self.sheet.write_datetime(self.row, index, value, self.when)
            elif column.type is ColumnType.credits:
                self.sheet.write_number(self.row, index, float(value), self.decimal)
            elif column.type is ColumnType.integer:
                self.sheet.write_number(self.row, index, value)
            elif column.type is ColumnType.boolean:
                self.sheet.write_boolean(self.row, index, value)
            else:
                self.sheet.write_string(self.row, index, value)
        self.row += 1

    def finish(self, totals: Totals) -> None:
        """A blank row, then one totals row per group (per currency for sales)."""
        self.row += 1
        for group, sums in sorted(totals.sums.items()):
            self.sheet.write_string(self.row, 0, "Total", self.bold)
            for index, column in enumerate(self.spec.columns):
                if column.name == self.spec.total_by:
                    self.sheet.write_string(self.row, index, group, self.bold)
                elif column.total:
                    number = float(sums.get(column.name, Decimal(0)))
                    cell_format = self.decimal if column.type is ColumnType.credits else None
                    self.sheet.write_number(self.row, index, number, cell_format)
            self.row += 1
        self.workbook.close()


async def _xlsx(
    spec: ReportSpec, records: AsyncIterator[list[dict[str, Any]]], period: Period, pdf_max_rows: int
) -> AsyncIterator[bytes]:
    with tempfile.TemporaryDirectory(prefix="pixforge-report-") as folder:
        path = os.path.join(folder, "report.xlsx")
        writer = await asyncio.to_thread(_XlsxWriter, path, spec)
        totals = Totals()
        async for batch in records:
            for record in batch:
                totals.add(spec, record)
            await asyncio.to_thread(writer.write, batch)
        await asyncio.to_thread(writer.finish, totals)
        for chunk in _file_chunks(path):
            yield chunk


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while chunk := file.read(_FILE_CHUNK):
            yield chunk


# --- PDF ---------------------------------------------------------------------------------------------


def _latin1(text: str) -> str:
    # The PDF core fonts speak Latin-1 only; anything else is shown as '?' rather than refused.
    return text.encode("latin-1", "replace").decode("latin-1")


def _pdf_text(column: Column, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _latin1(str(value))


def _render_pdf(spec: ReportSpec, period: Period, rows: list[list[str]], totals: Totals, shown: int) -> bytes:
    columns = [column for column in spec.columns if column.in_pdf]
    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_title(f"Pixforge - {spec.title}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(text=f"Pixforge - {spec.title}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.cell(
        text=f"Period: {period.since:%Y-%m-%d %H:%M} to {period.until:%Y-%m-%d %H:%M} UTC (end excluded)",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.cell(text=f"Rows: {totals.rows}", new_x="LMARGIN", new_y="NEXT")
    for group, sums in sorted(totals.sums.items()):
        figures = ", ".join(f"{name} {value}" for name, value in sums.items())
        prefix = f"Total {group}: " if group else "Total: "
        pdf.cell(text=_latin1(prefix + figures), new_x="LMARGIN", new_y="NEXT")
    if shown < totals.rows:
        pdf.cell(text=f"The table lists the first {shown} rows.", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Helvetica", size=7)
    numeric = {ColumnType.integer, ColumnType.credits}
    with pdf.table(
        col_widths=tuple(column.width for column in columns),
        text_align=tuple("RIGHT" if column.type in numeric else "LEFT" for column in columns),
        headings_style=FontFace(emphasis="BOLD"),
        line_height=4,
    ) as table:
        table.row([column.name for column in columns])
        for cells in rows:
            table.row(cells)
    return bytes(pdf.output())


async def _pdf(
    spec: ReportSpec, records: AsyncIterator[list[dict[str, Any]]], period: Period, pdf_max_rows: int
) -> AsyncIterator[bytes]:
    columns = [column for column in spec.columns if column.in_pdf]
    rows: list[list[str]] = []
    totals = Totals()
    async for batch in records:
        for record in batch:
            totals.add(spec, record)
            if len(rows) < pdf_max_rows:
                rows.append([_pdf_text(column, record[column.name]) for column in columns])
    yield await asyncio.to_thread(_render_pdf, spec, period, rows, totals, len(rows))

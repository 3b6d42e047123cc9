"""A tax invoice as a one-page PDF (fpdf2), drawn only from what the invoice row holds."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import TaxInvoice, User
from app.services.billing import tax_invoices
from app.services.billing.tax_invoices import TaxBasis

# Currencies whose minor unit is not a hundredth (ISO 4217); every other one has two decimals.
_DECIMALS = {"BIF": 0, "CLP": 0, "JPY": 0, "KRW": 0, "VND": 0, "XAF": 0, "XOF": 0, "BHD": 3, "KWD": 3}
_UNICODE_FONT = "InvoiceSans"


def money(amount: int, currency: str) -> str:
    """Minor units as the amount a reader expects: 1234 USD -> "12.34 USD"."""
    decimals = _DECIMALS.get(currency.upper(), 2)
    value = Decimal(amount).scaleb(-decimals)
    return f"{value:,.{decimals}f} {currency.upper()}"


def percent(basis_points: int) -> str:
    return f"{Decimal(basis_points).scaleb(-2).normalize():f} %"


class _Writer:
    """Text in a TrueType font when one is configured (any script), else in Helvetica, whose Latin-1
    cannot hold every name: what it cannot show becomes "?" rather than a refused invoice."""

    def __init__(self, font_path: str) -> None:
        self.pdf = FPDF(format="A4")
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.pdf.add_page()
        self.unicode = bool(font_path) and Path(font_path).is_file()
        if self.unicode:
            self.pdf.add_font(_UNICODE_FONT, "", font_path)
        self.font(10)

    def font(self, size: int) -> None:
        self.pdf.set_font(_UNICODE_FONT if self.unicode else "Helvetica", size=size)

    def text(self, value: str) -> str:
        return value if self.unicode else value.encode("latin-1", "replace").decode("latin-1")

    def line(self, value: str, *, width: float = 0, align: str = "L", height: float = 6) -> None:
        self.pdf.cell(width, height, self.text(value), align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def row(self, label: str, value: str) -> None:
        self.pdf.cell(120, 7, self.text(label), border="B")
        self.pdf.cell(0, 7, self.text(value), border="B", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _party(writer: _Writer, title: str, lines: list[str]) -> None:
    writer.font(9)
    writer.line(title)
    writer.font(10)
    for line in lines:
        writer.line(line, height=5)
    writer.pdf.ln(4)


def render(invoice: TaxInvoice, *, font_path: str) -> bytes:
    writer = _Writer(font_path)
    writer.font(18)
    writer.line(f"Invoice {invoice.number}", height=10)
    writer.font(10)
    writer.line(f"Issue date: {invoice.issued_at.date().isoformat()}")
    writer.line(f"Order reference: {invoice.order_id}")
    writer.pdf.ln(4)

    seller = [invoice.seller_name]
    seller += [
        part.strip() for part in invoice.seller_address.replace(";", "\n").splitlines() if part.strip()
    ]
    if invoice.seller_country:
        seller.append(f"Country: {invoice.seller_country}")
    if invoice.seller_vat_id:
        seller.append(f"VAT ID: {invoice.seller_vat_id}")
    _party(writer, "Seller", seller)

    buyer = [line for line in (invoice.buyer_name, invoice.buyer_email) if line]
    if invoice.buyer_country:
        buyer.append(f"Country: {invoice.buyer_country}")
    if invoice.buyer_vat_number:
        buyer.append(f"VAT number: {invoice.buyer_vat_number}")
    _party(writer, "Bill to", buyer or ["-"])

    currency = invoice.currency
    writer.row(invoice.description, money(invoice.net_amount, currency))
    writer.row("Net amount", money(invoice.net_amount, currency))
    writer.row(f"VAT {percent(invoice.vat_rate_bp)}", money(invoice.vat_amount, currency))
    writer.font(12)
    writer.row("Total", money(invoice.gross_amount, currency))
    writer.font(9)
    writer.pdf.ln(4)
    if invoice.tax_basis == TaxBasis.reverse_charge:
        writer.line(
            "Reverse charge: VAT to be accounted for by the recipient (Article 196, Directive 2006/112/EC)."
        )
    elif invoice.tax_basis == TaxBasis.provider:
        writer.line("VAT as calculated at checkout.")
    writer.line(f"Paid in full. Currency: {currency}.")
    return bytes(writer.pdf.output())


@dataclass(frozen=True)
class InvoiceFile:
    number: str
    content: bytes


async def download(session: AsyncSession, settings: Settings, user: User, order_id: uuid.UUID) -> InvoiceFile:
    """The caller's order's invoice as a PDF (404 not theirs, 409 not paid: tax_invoices.invoice_of),
    drawn in a worker thread: a TrueType font is parsed and subset for every file."""
    invoice = await tax_invoices.invoice_of(session, user, order_id)
    content = await asyncio.to_thread(render, invoice, font_path=settings.invoice_font_path)
    return InvoiceFile(invoice.number, content)

"""Tax invoices of paid orders, and the VAT on them. (invoices.py is about the providers' subscription
invoices; this module is about the invoices we issue.)

* Numbered without gaps: `issue` runs in the transaction that marks the order paid (orders.fulfil) and
  takes the next number of the year from a counter row it holds locked until that transaction ends. A
  payment rolled back takes its number back with it; payments at once queue on the row.
* Copied at issue: seller (settings), buyer, amounts and VAT are stored on the invoice, which never
  changes afterwards.
* The VAT, first rule that applies:
  1. Stripe Tax computed it (the order carries `tax_amount`, reported only with automatic tax): our
     price is the net (Stripe adds the tax on top), VAT = Stripe's tax, gross = net + VAT.
  2. Reverse charge: the seller's country and the buyer's are different EU member states and the buyer
     gave a valid EU VAT number of their own country (VIES-confirmed when VIES checks are on): 0 %, the
     buyer accounts for the VAT.
  3. The rate table (`VAT_RATES`) for the buyer's country (the seller's when the buyer's is unknown);
     a country not listed pays no VAT. The price paid already includes it: net = gross / (1 + rate),
     rounded half up to the minor unit, VAT = gross - net.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError

from app.config import Settings
from app.db.base import utcnow
from app.errors import Conflict, NotFound
from app.models import BillingProfile, Order, OrderStatus, PlanKind, TaxInvoice, User
from app.repositories.billing import OrderRepository, PlanRepository
from app.repositories.tax_invoices import (
    BillingProfileRepository,
    InvoiceCounterRepository,
    TaxInvoiceRepository,
)
from app.repositories.users import UserRepository
from app.services import credits

log = structlog.get_logger("app.tax_invoices")

# EU member states by ISO 3166 country code (stdnum lists Greece as "gr", and "xi", Northern Ireland's VAT
# prefix, which is no member state's country).
EU_COUNTRIES = frozenset(code.upper() for code in eu_vat.MEMBER_STATES if code != "xi")
BASIS_POINTS = 10_000


class TaxBasis(StrEnum):
    provider = "provider"
    reverse_charge = "reverse_charge"
    rate_table = "rate_table"


class OrderNotPaid(Conflict):
    code = "order_not_paid"
    default_detail = "This order is not paid, so it has no invoice."


# --- VAT numbers -------------------------------------------------------------------------------------


def vat_number_country(number: str) -> str:
    """The ISO country of an EU VAT number's prefix (Greece's "EL" is "GR")."""
    prefix = number[:2].upper()
    return "GR" if prefix == "EL" else prefix


def valid_vat_number(number: str) -> str | None:
    """The number compacted ("DE 123 456 789" -> "DE123456789") when it is a well-formed EU VAT number
    (country prefix and that country's check digits, python-stdnum), else None."""
    try:
        return str(eu_vat.validate(number))
    except ValidationError:
        return None


# --- the VAT of one invoice ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaxLines:
    net: int
    vat_rate_bp: int
    vat: int
    gross: int
    basis: TaxBasis


def percent_to_bp(rate: Decimal) -> int:
    return int((rate * 100).to_integral_value(ROUND_HALF_UP))


def _reported_rate_bp(net: int, vat: int, table_rate: Decimal | None) -> int:
    """The rate to print beside a tax the provider computed: the table's rate for the country when it
    gives that tax (to the minor unit), else the effective rate, to 0.01 %."""
    if net <= 0:
        return 0
    if table_rate is not None and abs(Decimal(net) * table_rate / 100 - vat) <= 1:
        return percent_to_bp(table_rate)
    return int((Decimal(vat) * BASIS_POINTS / net).to_integral_value(ROUND_HALF_UP))


def reverse_charged(seller_country: str | None, buyer_country: str | None, vat_number: str | None) -> bool:
    """EU B2B across a border: both countries are member states, different ones, and the buyer's VAT
    number is a well-formed one of their own country."""
    if seller_country is None or buyer_country is None or vat_number is None:
        return False
    if seller_country not in EU_COUNTRIES or buyer_country not in EU_COUNTRIES:
        return False
    if seller_country == buyer_country:
        return False
    compact = valid_vat_number(vat_number)
    return compact is not None and vat_number_country(compact) == buyer_country


def tax_lines(
    *,
    amount: int,
    reported_tax: int | None,
    seller_country: str | None,
    buyer_country: str | None,
    buyer_vat_number: str | None,
    rates: dict[str, Decimal],
) -> TaxLines:
    """The invoice's net, VAT and gross for an order paid `amount` (minor units), by the module's rules."""
    table_rate = rates.get(buyer_country or seller_country or "")
    if reported_tax is not None:
        rate_bp = _reported_rate_bp(amount, reported_tax, table_rate)
        return TaxLines(amount, rate_bp, reported_tax, amount + reported_tax, TaxBasis.provider)
    if reverse_charged(seller_country, buyer_country, buyer_vat_number):
        return TaxLines(amount, 0, 0, amount, TaxBasis.reverse_charge)
    rate_bp = percent_to_bp(table_rate) if table_rate is not None else 0
    net = int((Decimal(amount) * BASIS_POINTS / (BASIS_POINTS + rate_bp)).to_integral_value(ROUND_HALF_UP))
    return TaxLines(net, rate_bp, amount - net, amount, TaxBasis.rate_table)


# --- issuing -----------------------------------------------------------------------------------------


def invoice_number(year: int, sequence: int) -> str:
    return f"{year}-{sequence:06d}"


def _provider_vat_number(order: Order) -> str | None:
    """The EU VAT number the customer gave the provider's checkout (Stripe's `eu_vat` tax id), if any."""
    for tax_id in order.customer_tax_ids or []:
        value = tax_id.get("value")
        if tax_id.get("type") == "eu_vat" and isinstance(value, str):
            return valid_vat_number(value) or value
    return None


@dataclass(frozen=True)
class Buyer:
    name: str | None
    email: str | None
    country: str | None
    vat_number: str | None
    # The VAT number may take the reverse charge: what the provider collected, a VIES-confirmed one, or
    # any well-formed one while VIES checks are off.
    vat_number_usable: bool


def _buyer(order: Order, user: User | None, profile: BillingProfile | None, settings: Settings) -> Buyer:
    """Stripe Tax's facts win over the stored profile: the country it taxed and the VAT number the
    customer gave for this very payment. Without Stripe Tax a checkout's billing country (a card's,
    often) only stands in for a profile that names none."""
    provider_vat = _provider_vat_number(order)
    profile_vat = profile.vat_number if profile is not None else None
    profile_vat_usable = profile is not None and (
        not settings.vies_check_enabled or profile.vat_verified_at is not None
    )
    profile_country = profile.country if profile is not None else None
    if order.tax_amount is not None:
        country = order.billing_country or profile_country
    else:
        country = profile_country or order.billing_country
    name = (profile.name if profile is not None else None) or (user.name if user is not None else None)
    return Buyer(
        name=name,
        email=user.email if user is not None else None,
        country=country.upper() if country else None,
        vat_number=provider_vat or profile_vat,
        vat_number_usable=provider_vat is not None or profile_vat_usable,
    )


async def _description(session: AsyncSession, order: Order) -> str:
    plan = await PlanRepository(session).get(order.plan_id) if order.plan_id is not None else None
    name = plan.name if plan is not None else "Pixforge"
    if order.kind == PlanKind.credit_pack:
        return f"{name}: {credits.to_credits(order.credits).normalize():f} credits"
    return f"{name} subscription"


async def issue(
    session: AsyncSession, settings: Settings, order: Order, now: datetime | None = None
) -> TaxInvoice:
    """The invoice of an order this transaction just marked paid, numbered from the year's counter (see
    the module docstring)."""
    issued_at = now or utcnow()
    user = await UserRepository(session).get(order.user_id)
    profile = await BillingProfileRepository(session).get_for_user(order.user_id)
    buyer = _buyer(order, user, profile, settings)
    seller_country = settings.invoice_seller_country
    lines = tax_lines(
        amount=order.amount,
        reported_tax=order.tax_amount,
        seller_country=seller_country,
        buyer_country=buyer.country,
        buyer_vat_number=buyer.vat_number if buyer.vat_number_usable else None,
        rates=settings.vat_rates,
    )
    description = await _description(session, order)
    sequence = await InvoiceCounterRepository(session).take_next(issued_at.year)
    invoice = TaxInvoice(
        id=uuid.uuid4(),
        number=invoice_number(issued_at.year, sequence),
        year=issued_at.year,
        sequence=sequence,
        order_id=order.id,
        user_id=order.user_id,
        issued_at=issued_at,
        seller_name=settings.invoice_seller_name,
        seller_address=settings.invoice_seller_address,
        seller_vat_id=settings.invoice_seller_vat_id or None,
        seller_country=seller_country,
        buyer_name=buyer.name,
        buyer_email=buyer.email,
        buyer_country=buyer.country,
        buyer_vat_number=buyer.vat_number,
        description=description[:200],
        currency=order.currency.upper(),
        net_amount=lines.net,
        vat_rate_bp=lines.vat_rate_bp,
        vat_amount=lines.vat,
        gross_amount=lines.gross,
        tax_basis=lines.basis.value,
    )
    await TaxInvoiceRepository(session).add(invoice)
    log.info("billing.invoice_issued", order_id=str(order.id), number=invoice.number, basis=lines.basis.value)
    return invoice


# --- reading -----------------------------------------------------------------------------------------


async def invoice_of(session: AsyncSession, user: User, order_id: uuid.UUID) -> TaxInvoice:
    """The invoice of the caller's order: 404 when the order is not theirs (or does not exist), 409 when
    it was never paid. A refunded order keeps the invoice it was issued."""
    order = await OrderRepository(session).get_for_user(order_id, user.id)
    if order is None:
        raise NotFound("No such order.")
    invoice = await TaxInvoiceRepository(session).get_by_order(order.id)
    if invoice is None:
        if order.status in (OrderStatus.paid.value, OrderStatus.refunded.value):
            # Paid before invoices existed: no number was taken in its payment's transaction.
            raise OrderNotPaid("This order was paid before invoices were issued; it has none.")
        raise OrderNotPaid()
    return invoice

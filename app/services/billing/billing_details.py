"""A user's billing details, printed as the buyer on the tax invoices of their later payments: a name, a
country and, for a business, an EU VAT number.

A VAT number must be well formed for its country (python-stdnum: prefix, length, check digits) and of
the country given (Greece's prefix is EL), else 422 `invalid_vat_number`. With VIES_CHECK_ENABLED it is
also asked of VIES before anything is saved: "not registered" is a 422 too; VIES not answering (down,
slow, the member state's register away) saves the number unconfirmed (`vat_verified` false) and logs it,
and since an unconfirmed number takes no reverse charge while checks are on, the user saves it again
later. With checks off (the default) a well-formed number is enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.base import utcnow
from app.errors import AppError
from app.integrations.vies import VatCheckUnavailable, VatNumberChecker
from app.models import BillingProfile, User
from app.repositories.tax_invoices import BillingProfileRepository
from app.services.billing.tax_invoices import valid_vat_number, vat_number_country

log = structlog.get_logger("app.billing_details")


class InvalidVatNumber(AppError):
    status_code = 422
    code = "invalid_vat_number"
    default_detail = "This is not a valid EU VAT number."


@dataclass(frozen=True)
class BillingDetails:
    name: str | None
    country: str | None
    vat_number: str | None


async def get(session: AsyncSession, user: User) -> BillingProfile | None:
    return await BillingProfileRepository(session).get_for_user(user.id)


async def _verified(settings: Settings, checker: VatNumberChecker | None, vat_number: str) -> bool:
    """True when VIES confirms the number; raises InvalidVatNumber when it says it is not registered."""
    if not settings.vies_check_enabled or checker is None:
        return False
    try:
        registered = await checker.is_registered(vat_number)
    except VatCheckUnavailable as exc:
        log.warning("billing.vies_unavailable", country=vat_number[:2], reason=str(exc))
        return False
    if not registered:
        raise InvalidVatNumber("VIES does not know this VAT number as registered.")
    return True


async def save(
    session: AsyncSession,
    settings: Settings,
    checker: VatNumberChecker | None,
    user: User,
    details: BillingDetails,
) -> BillingProfile:
    """Replace the user's billing details (checked as the module docstring says; nothing is saved on a
    refusal). A VAT number without a country gives its own."""
    country = details.country.upper() if details.country else None
    vat_number = None
    verified = False
    if details.vat_number:
        vat_number = valid_vat_number(details.vat_number)
        if vat_number is None:
            raise InvalidVatNumber()
        country = country or vat_number_country(vat_number)
        if vat_number_country(vat_number) != country:
            raise InvalidVatNumber(f"This VAT number is not one of {country}.")
        verified = await _verified(settings, checker, vat_number)
    name = details.name.strip() if details.name and details.name.strip() else None
    return await BillingProfileRepository(session).save(
        user.id,
        {
            "name": name,
            "country": country,
            "vat_number": vat_number,
            "vat_verified_at": utcnow() if verified else None,
            "updated_at": utcnow(),
        },
    )

"""Tax invoices over HTTP: `GET /payment/orders/{id}/invoice` (a PDF, parsed back with pypdf) for orders
paid through each provider's fake, and the buyer's details `GET/PUT /users/me/billing-details` with EU
VAT numbers checked for format and, when enabled, against a fake VIES.

The seller is German (DE) with a rate table for DE and FR; amounts are minor units. The VAT rules and
the numbering are tested in tests/services/billing/test_tax_invoices.py.
"""

from __future__ import annotations

import io
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.models import BillingProfile, TaxInvoice, User
from tests.factories import bearer, make_order, make_user
from tests.fakes.dodo import FakeDodo
from tests.fakes.razorpay import FakeRazorpay
from tests.fakes.stripe import FakeStripe, build_customer_details
from tests.fakes.vies import FakeVies
from tests.support.http import assert_error
from tests.support.payments import (
    ORDERS,
    STRIPE_WEBHOOK,
    PaymentFlow,
    deliver,
    payment_flow,
    payment_settings,
    send_webhook,
    stripe_checkout,
)

BILLING_DETAILS = "/api/v1/users/me/billing-details"
SELLER = {
    "invoice_seller_name": "Pixforge GmbH",
    "invoice_seller_address": "Hauptstrasse 1; 10115 Berlin",
    "invoice_seller_vat_id": "DE129273398",
    "invoice_seller_country": "DE",
    "vat_rates": {"DE": Decimal(19), "FR": Decimal(20)},
}
FR_VAT = "FR40303265045"


def invoice_path(order_id: str | uuid.UUID) -> str:
    return f"{ORDERS}/{order_id}/invoice"


@pytest.fixture
def billing_overrides() -> dict[str, object]:
    """Per-test setting overrides: `@pytest.mark.parametrize("billing_overrides", [{...}])`."""
    return {}


@pytest.fixture
def settings(
    database_url: str,
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    billing_overrides: dict[str, object],
) -> Settings:
    values = {**SELLER, "vies_base_url": "https://vies.fake.test/taxation_customs/vies/rest-api"}
    return payment_settings(
        database_url, fake_stripe, fake_razorpay, fake_dodo, **values, **billing_overrides
    )


@pytest.fixture
def fake_vies(outside_http: respx.MockRouter, settings: Settings) -> FakeVies:
    return FakeVies(outside_http, settings.vies_base_url)


async def save_details(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> httpx.Response:
    return await client.put(BILLING_DETAILS, json=body, headers=auth)


async def invoice_text(client: httpx.AsyncClient, auth: dict[str, str], order_id: str) -> tuple[str, str]:
    """(the attachment's file name, the PDF's text) of the order's invoice."""
    response = await client.get(invoice_path(order_id), headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    filename = disposition.split("filename=", 1)[1].strip('"')
    reader = PdfReader(io.BytesIO(response.content))
    return filename, "\n".join(page.extract_text() for page in reader.pages)


def money(amount: int, currency: str) -> str:
    return f"{Decimal(amount).scaleb(-2):,.2f} {currency}"


def included_vat(gross: int, rate: int) -> tuple[int, int]:
    """(net, VAT) of a price that includes `rate` % VAT, the net rounded half up."""
    net = int((Decimal(gross) * 100 / (100 + rate)).quantize(Decimal(1), rounding="ROUND_HALF_UP"))
    return net, gross - net


# --- the invoice of a paid order ---------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["stripe", "razorpay", "dodo"])
async def test_a_paid_order_has_a_pdf_invoice_with_its_number_totals_seller_and_buyer(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
    provider: str,
) -> None:
    """A consumer in France: the table's 20 % is inside the price paid."""
    saved = await save_details(client, auth, name="Jeanne Dupont", country="fr")
    assert saved.status_code == 200, saved.text
    flow: PaymentFlow = payment_flow(provider, fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    await deliver(client, flow.confirmations(purchase)[0])

    filename, text = await invoice_text(client, auth, purchase.order_id)

    currency = "INR" if provider == "razorpay" else "USD"
    net, vat = included_vat(purchase.amount, 20)
    number = filename.removeprefix("invoice-").removesuffix(".pdf")
    assert f"Invoice {number}" in text
    assert number[:4].isdigit()
    assert number[4] == "-"
    assert len(number) == 11
    for expected in (
        "Pixforge GmbH",
        "Hauptstrasse 1",
        "10115 Berlin",
        "VAT ID: DE129273398",
        "Jeanne Dupont",
        "Country: FR",
        f"Order reference: {purchase.order_id}",
        f"Net amount {money(net, currency)}",
        f"VAT 20 % {money(vat, currency)}",
        f"Total {money(purchase.amount, currency)}",
    ):
        assert expected in text, (expected, text)


@pytest.mark.parametrize(
    "billing_overrides", [{"stripe_automatic_tax": True, "stripe_tax_id_collection": True}]
)
async def test_stripe_taxs_figures_and_the_buyers_vat_number_from_checkout_are_used(
    client: httpx.AsyncClient, auth: dict[str, str], fake_stripe: FakeStripe
) -> None:
    """Stripe Tax added 120 on top of our 599: net 599, VAT 120, total 719, the buyer's country and
    VAT number as the checkout collected them (over the stored details)."""
    await save_details(client, auth, name="ACME SARL", country="DE")
    created = await stripe_checkout(client, auth)
    details = build_customer_details(country="FR", tax_ids=[("eu_vat", FR_VAT)], business_name="ACME SARL")
    paid = fake_stripe.checkout_completed(created["session_id"], customer_details=details, amount_tax=120)
    await send_webhook(client, STRIPE_WEBHOOK, fake_stripe.deliver(paid))

    _, text = await invoice_text(client, auth, created["order_id"])

    for expected in (
        "Country: FR",
        f"VAT number: {FR_VAT}",
        "Net amount 5.99 USD",
        "VAT 20 % 1.20 USD",
        "Total 7.19 USD",
        "VAT as calculated at checkout.",
    ):
        assert expected in text, (expected, text)


async def test_an_eu_business_in_another_member_state_is_reverse_charged(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
) -> None:
    await save_details(client, auth, name="ACME SARL", country="FR", vat_number="FR 40 303 265 045")
    flow = payment_flow("razorpay", fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    await deliver(client, flow.confirmations(purchase)[0])

    _, text = await invoice_text(client, auth, purchase.order_id)

    for expected in (
        f"VAT number: {FR_VAT}",
        f"Net amount {money(purchase.amount, 'INR')}",
        f"VAT 0 % {money(0, 'INR')}",
        f"Total {money(purchase.amount, 'INR')}",
        "Reverse charge",
    ):
        assert expected in text, (expected, text)


async def test_the_invoice_keeps_the_details_it_was_issued_with(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
) -> None:
    await save_details(client, auth, name="Old Name", country="DE")
    flow = payment_flow("dodo", fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    await deliver(client, flow.confirmations(purchase)[0])
    first_name, _ = await invoice_text(client, auth, purchase.order_id)

    await save_details(client, auth, name="New Name", country="FR")
    again_name, again_text = await invoice_text(client, auth, purchase.order_id)

    assert (again_name, "Old Name" in again_text, "New Name" in again_text) == (first_name, True, False)
    assert "VAT 19 %" in again_text


async def test_a_name_outside_latin_1_is_printed(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
) -> None:
    await save_details(client, auth, name="Łukasz Żółć", country="PL")
    flow = payment_flow("stripe", fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    await deliver(client, flow.confirmations(purchase)[0])

    _, text = await invoice_text(client, auth, purchase.order_id)

    assert "Łukasz Żółć" in text


# --- refusals ----------------------------------------------------------------------------------------


async def test_another_users_order_unknown_and_unpaid_orders_have_no_invoice(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    container: Container,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
) -> None:
    flow = payment_flow("stripe", fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    await deliver(client, flow.confirmations(purchase)[0])
    unpaid = await make_order(session, user)
    other = await make_user(session, settings)

    theirs = await client.get(invoice_path(purchase.order_id), headers=bearer(container, other))
    unknown = await client.get(invoice_path(uuid.uuid4()), headers=auth)
    not_paid = await client.get(invoice_path(unpaid.id), headers=auth)
    malformed = await client.get(invoice_path("not-an-id"), headers=auth)
    anonymous = await client.get(invoice_path(purchase.order_id))

    assert_error(theirs, 404, "not_found")
    assert_error(unknown, 404, "not_found")
    assert_error(not_paid, 409, "order_not_paid")
    assert_error(malformed, 422, "validation_error")
    assert anonymous.status_code == 401


# --- billing details ---------------------------------------------------------------------------------


async def test_billing_details_are_empty_then_saved_with_the_vat_number_compacted(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    empty = await client.get(BILLING_DETAILS, headers=auth)
    saved = await save_details(client, auth, name=" ACME GmbH ", vat_number="de 129.273.398")
    read = await client.get(BILLING_DETAILS, headers=auth)

    assert empty.json() == {"name": None, "country": None, "vat_number": None, "vat_verified": False}
    expected = {"name": "ACME GmbH", "country": "DE", "vat_number": "DE129273398", "vat_verified": False}
    assert saved.status_code == 200, saved.text
    assert saved.json() == read.json() == expected


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param({"country": "DE", "vat_number": "DE123456789"}, "invalid_vat_number", id="check-digit"),
        pytest.param({"country": "DE", "vat_number": "DE12"}, "invalid_vat_number", id="too-short"),
        pytest.param({"country": "US", "vat_number": "US123456789"}, "invalid_vat_number", id="not-eu"),
        pytest.param(
            {"country": "FR", "vat_number": "DE129273398"}, "invalid_vat_number", id="other-country"
        ),
        pytest.param({"country": "DEU"}, "validation_error", id="country-not-alpha-2"),
        pytest.param({"country": "DE", "vat_number": "D" * 41}, "validation_error", id="too-long"),
        pytest.param({"name": "x" * 201}, "validation_error", id="name-too-long"),
    ],
)
async def test_bad_billing_details_are_refused_and_change_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any], error: str
) -> None:
    before = await save_details(client, auth, name="Kept", country="FR", vat_number=FR_VAT)

    refused = await save_details(client, auth, **body)

    assert_error(refused, 422, error)
    assert (await client.get(BILLING_DETAILS, headers=auth)).json() == before.json()


@pytest.mark.parametrize("billing_overrides", [{"vies_check_enabled": True}])
@pytest.mark.parametrize(
    ("vies", "status", "verified"),
    [
        pytest.param("registered", 200, True, id="registered"),
        pytest.param("unknown", 422, None, id="not-registered"),
        pytest.param("member-state-down", 200, False, id="ms-unavailable"),
        pytest.param("http-503", 200, False, id="vies-down"),
    ],
)
async def test_vies_confirms_refuses_or_leaves_a_vat_number_unconfirmed(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_vies: FakeVies,
    vies: str,
    status: int,
    verified: bool | None,
) -> None:
    """VIES answering "not registered" refuses the number; VIES not answering saves it unconfirmed."""
    if vies == "registered":
        fake_vies.registered.add(FR_VAT)
    elif vies == "member-state-down":
        fake_vies.unavailable.add("FR")
    elif vies == "http-503":
        fake_vies.fail_with(503)

    response = await save_details(client, auth, country="FR", vat_number=FR_VAT)

    assert fake_vies.calls == [FR_VAT]
    if status == 422:
        assert_error(response, 422, "invalid_vat_number")
        assert (await client.get(BILLING_DETAILS, headers=auth)).json()["vat_number"] is None
    else:
        assert response.status_code == 200, response.text
        assert response.json()["vat_verified"] is verified


@pytest.mark.parametrize("billing_overrides", [{"vies_check_enabled": True}])
async def test_with_vies_on_only_a_confirmed_number_is_reverse_charged(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    fake_vies: FakeVies,
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
) -> None:
    fake_vies.unavailable.add("FR")
    await save_details(client, auth, country="FR", vat_number=FR_VAT)
    flow = payment_flow("stripe", fake_stripe, fake_razorpay, fake_dodo)
    unconfirmed = await flow.buy(client, auth)
    await deliver(client, flow.confirmations(unconfirmed)[0])

    fake_vies.unavailable.clear()
    fake_vies.registered.add(FR_VAT)
    await save_details(client, auth, country="FR", vat_number=FR_VAT)
    confirmed = await flow.buy(client, auth)
    await deliver(client, flow.confirmations(confirmed)[0])

    _, unconfirmed_text = await invoice_text(client, auth, unconfirmed.order_id)
    _, confirmed_text = await invoice_text(client, auth, confirmed.order_id)
    assert "VAT 20 %" in unconfirmed_text
    assert "Reverse charge" not in unconfirmed_text
    assert "VAT 0 %" in confirmed_text
    assert "Reverse charge" in confirmed_text


async def test_erasing_the_account_deletes_its_billing_details_and_keeps_its_invoices(
    client: httpx.AsyncClient,
    session: AsyncSession,
    user: User,
    auth: dict[str, str],
    fake_stripe: FakeStripe,
    fake_razorpay: FakeRazorpay,
    fake_dodo: FakeDodo,
) -> None:
    await save_details(client, auth, name="Jeanne Dupont", country="FR", vat_number=FR_VAT)
    flow = payment_flow("stripe", fake_stripe, fake_razorpay, fake_dodo)
    purchase = await flow.buy(client, auth)
    await deliver(client, flow.confirmations(purchase)[0])

    assert (await client.delete("/api/v1/users/me", headers=auth)).status_code == 204

    session.expunge_all()
    profiles = await session.scalars(select(BillingProfile).where(BillingProfile.user_id == user.id))
    invoices = await session.scalars(select(TaxInvoice).where(TaxInvoice.user_id == user.id))
    assert list(profiles) == []
    assert [invoice.order_id for invoice in invoices] == [uuid.UUID(purchase.order_id)]

"""The catalogue (plans and their prices), orders for every provider with the refunds and disputes the
providers told us of, subscriptions, and the debts left when a refund claws back credits that were already
spent."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDPrimaryKeyMixin, utcnow


class PlanKind(StrEnum):
    credit_pack = "credit_pack"
    subscription = "subscription"


class Provider(StrEnum):
    stripe = "stripe"
    razorpay = "razorpay"
    dodo = "dodo"


class OrderStatus(StrEnum):
    created = "created"
    paid = "paid"
    failed = "failed"
    refunded = "refunded"


class Plan(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    __tablename__ = "plans"

    code: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(20))
    # Credits granted per purchase (packs) or per billing period (subscriptions), in millicredits.
    credits: Mapped[int] = mapped_column(BigInteger)
    # The plan a subscriber is on while the subscription runs (e.g. "pro"); None for packs.
    grants_plan: Mapped[str | None] = mapped_column(String(32))
    interval: Mapped[str | None] = mapped_column(String(10))
    dodo_product_id: Mapped[str | None] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)


class PlanPrice(UUIDPrimaryKeyMixin, Base):
    __tablename__ = "plan_prices"
    __table_args__ = (UniqueConstraint("plan_id", "currency"),)

    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"))
    currency: Mapped[str] = mapped_column(String(3))
    # Minor units of `currency` (paise, cents).
    amount: Mapped[int] = mapped_column(BigInteger)


class Order(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """One attempt to buy credits or a subscription, with whichever provider. The provider's own ids are
    unique, so a webhook and a client verification for one payment always find the same row."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("provider", "provider_order_id"),
        UniqueConstraint("provider", "provider_payment_id"),
        Index("ix_orders_user_id_created_at", "user_id", "created_at"),
        # Analytics and the sales report select a period's orders by creation and by payment.
        Index("ix_orders_created_at_status", "created_at", "status"),
        Index("ix_orders_paid_at", "paid_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    provider: Mapped[str] = mapped_column(String(16))
    plan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20))
    credits: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.created.value)
    provider_order_id: Mapped[str | None] = mapped_column(String(255))
    provider_payment_id: Mapped[str | None] = mapped_column(String(255))
    provider_subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    checkout_url: Mapped[str | None] = mapped_column(String(2048))
    paid_at: Mapped[datetime | None]
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    # Tax facts from the provider (billing country, customer tax ids such as EU VAT numbers).
    billing_country: Mapped[str | None] = mapped_column(String(2))
    customer_tax_ids: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    tax_amount: Mapped[int | None] = mapped_column(BigInteger)


class AdjustmentKind(StrEnum):
    refund = "refund"
    chargeback = "chargeback"
    chargeback_won = "chargeback_won"


class OrderAdjustment(UUIDPrimaryKeyMixin, Base):
    """One refund or dispute decision about an order's payment, as a provider told it: recorded once
    (`key` is the provider's identity of that fact, also the ledger key of the credits it moves) and applied
    to the order's credits as soon as the order is paid. A refund or a dispute that arrives before the
    payment's confirmation (providers promise no order) waits here, `applied_at` empty, and is applied when
    the payment lands, so every delivery order ends in the same state."""

    __tablename__ = "order_adjustments"

    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    # The provider's payment the fact is about (one order may see several payment attempts).
    payment_id: Mapped[str | None] = mapped_column(String(255))
    # Minor units of the order's currency: a refund's own amount, or a dispute's (None: the whole payment).
    amount: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[datetime | None]


class Subscription(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("provider", "provider_subscription_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    plan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    provider: Mapped[str] = mapped_column(String(16))
    provider_subscription_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    current_period_end: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class CreditDebt(UUIDPrimaryKeyMixin, Base):
    """Credits a refund or chargeback should have taken back but could not: they were already spent.
    Kept for admins to settle; the balance itself never goes below zero."""

    __tablename__ = "credit_debts"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    settled_at: Mapped[datetime | None]


class IdempotencyRecord(UUIDPrimaryKeyMixin, Base):
    """The first response to a POST sent with an Idempotency-Key, replayed to every retry of it."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The SHA-256 (hex) of the client's key: see repositories.billing.idempotency_key_digest.
    key: Mapped[str] = mapped_column(String(255))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    response_body: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class BillingProfile(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """Who a user's tax invoices are made out to: a name, a country and, for a business, its VAT number
    (stored compact, format-checked; `vat_verified_at` when VIES confirmed it)."""

    __tablename__ = "billing_profiles"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2))
    vat_number: Mapped[str | None] = mapped_column(String(32))
    vat_verified_at: Mapped[datetime | None]


class InvoiceCounter(UUIDPrimaryKeyMixin, Base):
    """The last tax invoice number given in one calendar year. Taken under a row lock inside the
    transaction that marks an order paid, so a rolled-back payment gives its number back (no gap) and two
    payments at once queue on the row (no duplicate)."""

    __tablename__ = "invoice_counters"

    year: Mapped[int] = mapped_column(unique=True)
    last_number: Mapped[int] = mapped_column(BigInteger, default=0)


class TaxInvoice(UUIDPrimaryKeyMixin, Base):
    """The tax invoice of one paid order, with everything printed on it copied at issue: it never changes
    when the settings, the plan or the buyer's details do later. Amounts are minor units of `currency`;
    `vat_rate_bp` is the rate in basis points (1900 = 19 %)."""

    __tablename__ = "tax_invoices"
    __table_args__ = (UniqueConstraint("year", "sequence"), Index("ix_tax_invoices_user_id", "user_id"))

    number: Mapped[str] = mapped_column(String(32), unique=True)
    year: Mapped[int]
    sequence: Mapped[int] = mapped_column(BigInteger)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    issued_at: Mapped[datetime]
    seller_name: Mapped[str] = mapped_column(String(200))
    seller_address: Mapped[str] = mapped_column(String(500))
    seller_vat_id: Mapped[str | None] = mapped_column(String(32))
    seller_country: Mapped[str | None] = mapped_column(String(2))
    buyer_name: Mapped[str | None] = mapped_column(String(200))
    buyer_email: Mapped[str | None] = mapped_column(String(320))
    buyer_country: Mapped[str | None] = mapped_column(String(2))
    buyer_vat_number: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    net_amount: Mapped[int] = mapped_column(BigInteger)
    vat_rate_bp: Mapped[int]
    vat_amount: Mapped[int] = mapped_column(BigInteger)
    gross_amount: Mapped[int] = mapped_column(BigInteger)
    # How the VAT was decided: "provider" (Stripe Tax reported it), "rate_table", "reverse_charge".
    tax_basis: Mapped[str] = mapped_column(String(16))

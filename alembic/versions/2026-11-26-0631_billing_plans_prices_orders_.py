"""billing: plans, prices, orders, subscriptions, debts, idempotency keys

Revision ID: 0003_billing
Revises: 0002_identity_credits
Create Date: 2026-11-26 06:31:45.326360
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

import app.db.base
from alembic import op

revision: str = "0003_billing"
down_revision: str | None = "0002_identity_credits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("code", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("grants_plan", sa.String(length=32), nullable=True),
        sa.Column("interval", sa.String(length=10), nullable=True),
        sa.Column("dodo_product_id", sa.String(length=100), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("code", name=op.f("uq_plans_code")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_idempotency_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("user_id", "key", name=op.f("uq_idempotency_keys_user_id_key")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "orders",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_order_id", sa.String(length=255), nullable=True),
        sa.Column("provider_payment_id", sa.String(length=255), nullable=True),
        sa.Column("provider_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("checkout_url", sa.String(length=2048), nullable=True),
        sa.Column("paid_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("billing_country", sa.String(length=2), nullable=True),
        sa.Column("customer_tax_ids", sa.JSON(), nullable=True),
        sa.Column("tax_amount", sa.BigInteger(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_orders_plan_id_plans"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_orders_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint(
            "provider", "provider_order_id", name=op.f("uq_orders_provider_provider_order_id")
        ),
        sa.UniqueConstraint(
            "provider", "provider_payment_id", name=op.f("uq_orders_provider_provider_payment_id")
        ),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_orders_provider_subscription_id"), ["provider_subscription_id"], unique=False
        )
        batch_op.create_index("ix_orders_user_id_created_at", ["user_id", "created_at"], unique=False)

    op.create_table(
        "plan_prices",
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_plan_prices_plan_id_plans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_prices")),
        sa.UniqueConstraint("plan_id", "currency", name=op.f("uq_plan_prices_plan_id_currency")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=True),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_subscription_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("current_period_end", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_subscriptions_plan_id_plans"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_subscriptions_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint(
            "provider",
            "provider_subscription_id",
            name=op.f("uq_subscriptions_provider_provider_subscription_id"),
        ),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subscriptions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "credit_debts",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("settled_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_credit_debts_order_id_orders"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_debts_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_debts")),
        sa.UniqueConstraint("reference", name=op.f("uq_credit_debts_reference")),
    )
    with op.batch_alter_table("credit_debts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credit_debts_user_id"), ["user_id"], unique=False)

    # The catalogue the seed apps sell: credit packs in INR (Razorpay) and USD (Stripe, Dodo), and Pro.
    # USD prices can be changed without a migration with PLAN_PRICES_USD.
    now = datetime.now(UTC)
    plans = sa.table(
        "plans",
        sa.column("id", sa.Uuid()),
        sa.column("code", sa.String()),
        sa.column("name", sa.String()),
        sa.column("description", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("credits", sa.BigInteger()),
        sa.column("grants_plan", sa.String()),
        sa.column("interval", sa.String()),
        sa.column("is_active", sa.Boolean()),
        sa.column("sort_order", sa.Integer()),
        sa.column("created_at", app.db.base.UTCDateTime()),
        sa.column("updated_at", app.db.base.UTCDateTime()),
    )
    prices = sa.table(
        "plan_prices",
        sa.column("id", sa.Uuid()),
        sa.column("plan_id", sa.Uuid()),
        sa.column("currency", sa.String()),
        sa.column("amount", sa.BigInteger()),
    )
    catalogue = [
        # code, name, kind, credits, grants_plan, interval, INR paise, USD cents
        ("basic", "Basic", "credit_pack", 100, None, None, 49_900, 599),
        ("premium", "Premium", "credit_pack", 300, None, None, 89_900, 1_099),
        ("ultimate", "Ultimate", "credit_pack", 1000, None, None, 149_900, 1_799),
        ("pro", "Pro", "subscription", 500, "pro", "month", 79_900, 999),
    ]
    plan_rows, price_rows = [], []
    for order, (code, name, kind, credits, grants_plan, interval, inr, usd) in enumerate(catalogue):
        plan_id = uuid.uuid5(uuid.NAMESPACE_URL, f"pixforge:plan:{code}")
        description = f"{credits} credits every month" if interval else f"{credits} credits"
        plan_rows.append(
            {
                "id": plan_id,
                "code": code,
                "name": name,
                "description": description,
                "kind": kind,
                "credits": credits * 1000,
                "grants_plan": grants_plan,
                "interval": interval,
                "is_active": True,
                "sort_order": order,
                "created_at": now,
                "updated_at": now,
            }
        )
        for currency, amount in (("INR", inr), ("USD", usd)):
            price_id = uuid.uuid5(uuid.NAMESPACE_URL, f"pixforge:plan:{code}:{currency}")
            price_rows.append({"id": price_id, "plan_id": plan_id, "currency": currency, "amount": amount})
    op.bulk_insert(plans, plan_rows)
    op.bulk_insert(prices, price_rows)


def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key still needs.
    op.drop_table("credit_debts")
    op.drop_table("subscriptions")
    op.drop_table("plan_prices")
    op.drop_table("orders")
    op.drop_table("idempotency_keys")
    op.drop_table("plans")

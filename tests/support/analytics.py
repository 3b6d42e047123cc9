"""A small, hand-countable month of activity (March 2025, two ISO weeks: from Monday 3 to Sunday 16), with
rows just outside it, for the analytics and report tests. Rows are written directly with their
timestamps, as the app would have written them on those days.

Hand-computed figures of the period [2025-03-03, 2025-03-17) are in `EXPECTED`; amounts of credits are
millicredits in the rows (1 credit = 1000) and decimals in the answers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import CreditAccount, CreditLedgerEntry, Job, Order, User

PERIOD = {"from": "2025-03-03T00:00:00Z", "to": "2025-03-17T00:00:00Z"}


def at(day: int, hour: int = 12, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


@dataclass
class Seeded:
    users: dict[str, User] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    ledger: dict[str, list[CreditLedgerEntry]] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)


async def seed_march(session: AsyncSession) -> Seeded:
    seeded = Seeded()
    tag = uuid.uuid4().hex[:8]
    users = {
        "u1": (at(3, 10), "free"),
        "u2": (at(4, 9), "pro"),
        "u3": (at(11, 12), "free"),
        "old": (at(1, 8, month=1), "free"),  # before the period
    }
    for name, (created_at, plan) in users.items():
        user = User(
            email=f"{name}-{tag}@march.example", plan=plan, created_at=created_at, updated_at=created_at
        )
        session.add(user)
        seeded.users[name] = user
    seeded.users["u3"].is_active = False  # banned
    seeded.users["u1"].email_verified_at = at(3, 10, 5)
    await session.flush()
    accounts = {}
    for name, user in seeded.users.items():
        accounts[name] = CreditAccount(user_id=user.id, balance={"u1": 107000, "u2": 10000}.get(name, 10000))
        session.add(accounts[name])
    await session.flush()

    orders = {
        # name: (user, provider, currency, amount, credits, status, paid_at, refunded)
        "o1": ("u1", "stripe", "USD", 999, 100_000, "paid", at(3, 11), 0),
        "o2": ("u2", "razorpay", "INR", 49_900, 50_000, "refunded", at(4, 10), 49_900),
        "o3": ("u1", "stripe", "USD", 1_999, 200_000, "paid", at(12, 8), 500),
        "o4": ("u3", "dodo", "USD", 500, 50_000, "failed", None, 0),
        "o5": ("old", "stripe", "USD", 999, 100_000, "paid", at(28, 23, month=2), 0),  # before
    }
    for name, (owner, provider, currency, amount, credits, status, paid_at, refunded) in orders.items():
        created_at = paid_at or at(11, 13)
        order = Order(
            user_id=seeded.users[owner].id,
            provider=provider,
            kind="credit_pack",
            credits=credits,
            amount=amount,
            currency=currency,
            status=status,
            paid_at=paid_at,
            refunded_amount=refunded,
            provider_order_id=f"{name}-{tag}",
            created_at=created_at,
            updated_at=created_at,
        )
        session.add(order)
        seeded.orders[name] = order

    movements = [
        # (user, reason, amount, when)
        ("u1", "signup_bonus", 10_000, at(3, 10)),
        ("u1", "purchase", 100_000, at(3, 11)),
        ("u1", "job_reserve", -1_000, at(3, 12)),
        ("u1", "job_capture", 0, at(3, 12, 1)),
        ("u1", "job_reserve", -1_000, at(5, 12)),
        ("u1", "job_release", 1_000, at(5, 12, 1)),
        ("u2", "signup_bonus", 10_000, at(4, 9)),
        ("u2", "purchase", 50_000, at(4, 10)),
        ("u2", "refund", -50_000, at(6, 9)),
        ("u1", "admin_adjustment", 2_500, at(12, 9)),
        ("u1", "admin_adjustment", -500, at(12, 10)),
        ("u3", "signup_bonus", 10_000, at(11, 12)),
        ("u1", "chargeback", -3_000, at(13, 9)),
        ("old", "signup_bonus", 10_000, at(1, 8, month=1)),  # before
        ("u1", "purchase", 5_000, at(17, 0)),  # on the exclusive end: after
    ]
    for index, (owner, reason, amount, when) in enumerate(movements):
        entry = CreditLedgerEntry(
            account_id=accounts[owner].id,
            amount=amount,
            reason=reason,
            reference=f"ref-{owner}-{index}-{tag}",
            idempotency_key=f"march-{index}-{tag}",
            balance_after=max(amount, 0),
            created_at=when,
        )
        session.add(entry)
        seeded.ledger.setdefault(owner, []).append(entry)

    jobs = [
        # (user, kind, status, time_taken_ms, credits_reserved, created_at)
        ("u1", "remove_background", "COMPLETED", 100, 1_000, at(3, 12)),
        ("u1", "remove_background", "COMPLETED", 200, 1_000, at(4, 12)),
        ("u2", "remove_background", "COMPLETED", 300, 1_000, at(5, 12)),
        ("u2", "remove_background", "FAILED", None, 1_000, at(5, 13)),
        ("u1", "remove_background", "COMPLETED", 1_000, 1_000, at(12, 12)),
        ("u1", "vectorize", "COMPLETED", 50, 200, at(12, 13)),
        ("u3", "vectorize", "PENDING", None, 200, at(13, 12)),
        ("old", "vectorize", "COMPLETED", 9_999, 200, at(2, 12)),  # before
    ]
    for owner, kind, status, took, reserved, created_at in jobs:
        job = Job(
            user_id=seeded.users[owner].id,
            kind=kind,
            status=status,
            time_taken_ms=took,
            credits_reserved=reserved,
            created_at=created_at,
            updated_at=created_at,
        )
        session.add(job)
        seeded.jobs.append(job)
    await session.flush()
    return seeded


# The period's figures, counted by hand from the rows above.
EXPECTED_TOTALS = {
    "revenue": [
        {
            "provider": "razorpay",
            "currency": "INR",
            "orders": 1,
            "gross": 49_900,
            "refunded": 49_900,
            "net": 0,
        },
        {"provider": "stripe", "currency": "USD", "orders": 2, "gross": 2_998, "refunded": 500, "net": 2_498},
    ],
    "orders_by_status": {"failed": 1, "paid": 2, "refunded": 1},
    "credits": {
        "sold": 150.0,  # purchases 100 + 50
        "granted": 32.5,  # signup bonuses 3 x 10, admin +2.5
        "spent": 1.0,  # reserved 2, released 1
        "refunded": 53.0,  # refund 50, chargeback 3
        "removed_by_admins": 0.5,
        "movements": 13,
    },
    "jobs": [
        {
            "kind": "remove_background",
            "total": 5,
            "by_status": {"COMPLETED": 4, "FAILED": 1},
            "failure_rate": 0.2,
            # 100, 200, 300, 1000: p50 between 200 and 300; p95 at 0.95 x 3 = 2.85 -> 300 + 0.85 x 700
            "p50_ms": 250.0,
            "p95_ms": 895.0,
        },
        {
            "kind": "vectorize",
            "total": 2,
            "by_status": {"COMPLETED": 1, "PENDING": 1},
            "failure_rate": 0.0,
            "p50_ms": 50.0,
            "p95_ms": 50.0,
        },
    ],
    "users": {"new": 3, "active": 3, "paying": 2, "conversion": 2 / 3},
}

"""Credits and webhooks throughput against a real server on PostgreSQL.

- debits: concurrent HTTP clients spending credits (POST admin/users/{id}/credits, amount -0.001), and
  the ratio to a bare asyncpg transaction doing the same conditional UPDATE + ledger INSERT;
- webhooks: a burst of distinct signed Stripe `checkout.session.completed` events, each crediting an order.

    .venv/bin/python -m bench.credits [--concurrency 8] [--scale 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import asyncpg
import httpx
import stripe
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.base import utcnow
from app.db.session import Database, create_engine
from app.models import LedgerReason, Order
from app.security import LocalTokenCodec
from app.services import credits
from app.services.users import create_user
from bench.common import HEADER, Result, api_server, bench_database, load

SECRET_KEY = "bench-secret-key-" + "x" * 32
WEBHOOK_SECRET = "whsec_bench"


async def seed(database_url: str, clients: int, orders: int) -> tuple[str, list[uuid.UUID], list[str]]:
    settings = Settings(_env_file=None, database_url=database_url, signup_bonus_credits=0)  # type: ignore[call-arg]
    database = Database(create_engine(database_url))
    async with database.session_scope() as session:
        admin = await create_user(
            session, settings, email="admin@bench.test", email_verified_at=utcnow(), role="admin"
        )
        targets = []
        for n in range(clients):
            user = await create_user(
                session, settings, email=f"spender{n}@bench.test", email_verified_at=utcnow()
            )
            await credits.grant(session, user.id, 10**9, LedgerReason.admin_adjustment, key=f"bench-seed:{n}")
            targets.append(user.id)
        buyer = await create_user(session, settings, email="buyer@bench.test", email_verified_at=utcnow())
        sessions = []
        for n in range(orders):
            session_id = f"cs_bench_{n}"
            session.add(
                Order(
                    user_id=buyer.id,
                    provider="stripe",
                    kind="credit_pack",
                    credits=100_000,
                    amount=599,
                    currency="USD",
                    provider_order_id=session_id,
                )
            )
            sessions.append(session_id)
        admin_id = admin.id
    await database.dispose()
    token, _ = LocalTokenCodec(SECRET_KEY, 3600, 3600).issue(admin_id, "access")
    return token, targets, sessions


async def bare_debits(database_url: str, accounts: list[uuid.UUID], total: int, concurrency: int) -> Result:
    """The floor: the same two statements in one transaction, straight through asyncpg."""
    url = make_url(database_url).set(drivername="postgresql")
    pool = await asyncpg.create_pool(
        url.render_as_string(hide_password=False), min_size=concurrency, max_size=concurrency
    )
    account_ids = [
        await pool.fetchval("SELECT id FROM credit_accounts WHERE user_id = $1", user_id)
        for user_id in accounts
    ]

    async def one(index: int) -> None:
        account_id = account_ids[index % len(account_ids)]
        async with pool.acquire() as connection, connection.transaction():
            balance = await connection.fetchval(
                "UPDATE credit_accounts SET balance = balance - 1 WHERE id = $1 AND balance - 1 >= 0 "
                "RETURNING balance",
                account_id,
            )
            await connection.execute(
                "INSERT INTO credit_ledger"
                " (id, account_id, amount, reason, idempotency_key, balance_after, created_at)"
                " VALUES ($1, $2, -1, 'admin_adjustment', $3, $4, now())",
                uuid.uuid4(),
                account_id,
                f"bare:{uuid.uuid4()}",
                balance,
            )

    result = await load("bare asyncpg UPDATE+INSERT", total, concurrency, one)
    await pool.close()
    return result


async def run(database_url: str, concurrency: int, scale: int) -> list[Result]:
    events = 500 * scale
    token, targets, sessions = await seed(database_url, concurrency, events)
    env = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET_KEY,
        "STRIPE_SECRET_KEY": "sk_test_bench",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "DB_POOL_SIZE": str(concurrency * 2),
    }
    results = []
    with api_server(env) as server:
        base = server.base
        async with httpx.AsyncClient(
            base_url=base, limits=httpx.Limits(max_connections=concurrency * 2)
        ) as client:
            headers = {"Authorization": f"Bearer {token}"}

            async def healthz(_: int) -> None:
                (await client.get("/healthz")).raise_for_status()

            async def debit(index: int) -> None:
                url = f"/api/v1/admin/users/{targets[index % len(targets)]}/credits"
                response = await client.post(url, headers=headers, json={"amount": "-0.001", "note": "bench"})
                response.raise_for_status()

            async def hot_debit(_: int) -> None:
                url = f"/api/v1/admin/users/{targets[0]}/credits"
                response = await client.post(url, headers=headers, json={"amount": "-0.001", "note": "bench"})
                response.raise_for_status()

            bodies = []
            for n, session_id in enumerate(sessions):
                event = {
                    "id": f"evt_bench_{n}",
                    "object": "event",
                    "type": "checkout.session.completed",
                    "created": int(time.time()),
                    "data": {
                        "object": {
                            "id": session_id,
                            "object": "checkout.session",
                            "mode": "payment",
                            "payment_status": "paid",
                            "payment_intent": f"pi_bench_{n}",
                            # What the seeded orders cost: a checkout paid for less grants nothing.
                            "amount_subtotal": 599,
                            "amount_total": 599,
                            "currency": "usd",
                            "metadata": {},
                        }
                    },
                }
                bodies.append(json.dumps(event).encode())

            outcomes: dict[str, int] = {}

            async def webhook(index: int) -> None:
                body = bodies[index]
                signature = stripe.WebhookSignature.generate_signature_header(body.decode(), WEBHOOK_SECRET)
                response = await client.post(
                    "/api/v1/webhooks/stripe",
                    content=body,
                    headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
                )
                response.raise_for_status()
                outcomes[response.json()["status"]] = outcomes.get(response.json()["status"], 0) + 1
                assert response.json()["status"] == "processed", response.text

            await load("warm-up", 200, concurrency, healthz)
            results.append(await load("GET /healthz", 2000 * scale, concurrency, healthz))
            results.append(await load("HTTP debit, own accounts", 1000 * scale, concurrency, debit))
            results.append(await load("HTTP debit, one hot account", 500 * scale, concurrency, hot_debit))
            results.append(await load("Stripe webhook burst", events, concurrency, webhook))
            # Every event must have paid its order: a burst of refusals would measure the wrong path.
            if outcomes != {"processed": events}:
                raise SystemExit(f"webhook burst outcomes {outcomes}, expected {events} processed")
    results.append(await bare_debits(database_url, targets, 1000 * scale, concurrency))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    with bench_database() as database_url:
        results = asyncio.run(run(database_url, args.concurrency, args.scale))
    health, own, hot, hooks, bare = results
    print(f"credits bench on PostgreSQL, one uvicorn worker, {args.concurrency} concurrent clients")
    print(HEADER)
    for result in (health, own, hot, hooks):
        print(result.row(health if result is not health else None))
    print(bare.row(None))
    print(
        f"HTTP debit / bare asyncpg transaction: {own.rate / bare.rate:.3f} (own accounts), "
        f"{hot.rate / bare.rate:.3f} (one hot account)"
    )
    print(f"Stripe webhook events/s: {hooks.rate:.1f}")


if __name__ == "__main__":
    main()

"""The mixed workload of issue 15 item 3, scaled out on one machine, then a ledger audit of what it left.

Setup: a throw-away PostgreSQL database (bench/common.py: BENCH_DATABASE_URL, default the local
127.0.0.1:5432), 2 API processes (`pixforge serve --workers 2`), 2 queue worker processes (`pixforge
worker --processes 2`, JOB_QUEUE=redis on a Redis database of their own, BENCH_REDIS_URL, default
redis://127.0.0.1:6379/13, flushed first) whose background-removal engine is the no-op one of
bench/noop_engine.py. The load comes from bench/loadgen.py (`--mix`, one process, its own CPU time
reported): CLIENTS keep-alive clients for SECONDS, each request drawn at random by weight:

    35%  GET /api/v1/users/credits                        (read)
    35%  GET /api/v1/images?limit=20, a gallery page      (read)
    20%  POST /api/v1/images/remove-background?async=true (job submit: 1 credit reserved, 202, queued)
    10%  POST /api/v1/webhooks/stripe                     (checkout.session.completed for an order,
         signed with the stripe SDK's helper; each pays one order, crediting its user 100 credits; 1 in
         11 deliveries is a redelivery of an event sent a few deliveries before)

Each client is one of USERS bench users (client i is user i % USERS). After the load, the workers drain
the queue, and the audit reads the database: every balance equals the sum of its ledger, every reserved
amount the sum of its open reservations (none, once drained), no job is left queued or running, each
webhook event was recorded and applied once, each paid order credited once and invoiced once with
contiguous invoice numbers. It prints PASS/FAIL per check and exits 1 on any FAIL.

    .venv/bin/python -m bench.mixed [--clients 200] [--seconds 60] [--users 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import stripe
from sqlalchemy import String, and_, cast, func, insert, literal, select
from sqlalchemy.orm import aliased

from app.config import Settings
from app.db.session import Database, create_engine
from app.models import (
    CreditAccount,
    CreditLedgerEntry,
    Job,
    JobKind,
    JobStatus,
    LedgerReason,
    Order,
    OrderStatus,
    PlanKind,
    TaxInvoice,
    WebhookEvent,
)
from app.security import LocalTokenCodec
from bench.common import ROOT, bench_database, free_port, rich_user, server_process, tree_cpu_seconds
from tests.support.images import photo_like

SECRET = "bench-secret-key-of-at-least-32-characters"
STRIPE_WEBHOOK_SECRET = "whsec_bench_mixed"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PACK_CREDITS = 100_000  # millicredits an order grants
PACK_CENTS = 599
WEIGHTS = {"credits": 35, "gallery": 35, "submit": 20, "webhook": 10}
EXPECTED = {"credits": 200, "gallery": 200, "submit": 202, "webhook": 200}
REDELIVERY_EVERY = 10  # after every 10th new event, one redelivery
DRAIN_SECONDS = 180


@dataclass
class Seeded:
    users: list[uuid.UUID]
    orders: list[tuple[uuid.UUID, uuid.UUID, str]]  # (order id, user id, checkout session id)


async def seed(database_url: str, users: int, orders: int) -> Seeded:
    """Verified users with balances no run exhausts and a 20-item gallery each, and pending Stripe credit
    pack orders (round robin over the users) for the webhooks to pay."""
    settings = Settings(_env_file=None, database_url=database_url, secret_key=SECRET)
    database = Database.from_settings(settings)
    seeded = Seeded([], [])
    async with database.session_scope() as session:
        for _ in range(users):
            user = await rich_user(session, settings, "mixed")
            seeded.users.append(user.id)
        await session.execute(
            insert(Job),
            [
                {
                    "id": uuid.uuid4(),
                    "user_id": user_id,
                    "kind": JobKind.vectorize.value,
                    "status": "COMPLETED",
                }
                for user_id in seeded.users
                for _ in range(20)
            ],
        )
        for index in range(orders):
            seeded.orders.append((uuid.uuid4(), seeded.users[index % users], f"cs_bench_{uuid.uuid4().hex}"))
        rows = [
            {
                "id": order_id,
                "user_id": user_id,
                "provider": "stripe",
                "kind": PlanKind.credit_pack.value,
                "credits": PACK_CREDITS,
                "amount": PACK_CENTS,
                "currency": "USD",
                "status": OrderStatus.created.value,
                "provider_order_id": checkout_id,
            }
            for order_id, user_id, checkout_id in seeded.orders
        ]
        for start in range(0, len(rows), 2000):
            await session.execute(insert(Order), rows[start : start + 2000])
    await database.dispose()
    return seeded


def raw_request(method: str, target: str, headers: list[str], body: bytes = b"") -> str:
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: keep-alive", *headers]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    return "\r\n".join(head).encode().decode("latin-1") + "\r\n\r\n" + body.decode("latin-1")


def submit_request(token: str, upload_id: str) -> str:
    boundary = "pixforgebench"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n{upload_id}\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    headers = [f"Authorization: Bearer {token}", f"Content-Type: multipart/form-data; boundary={boundary}"]
    return raw_request("POST", "/api/v1/images/remove-background?async=true", headers, body)


def checkout_completed(order_id: uuid.UUID, checkout_id: str) -> dict[str, Any]:
    """Stripe's `checkout.session.completed` for a paid one-off payment of our order."""
    return {
        "id": f"evt_bench_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": checkout_id,
                "object": "checkout.session",
                "mode": "payment",
                "status": "complete",
                "payment_status": "paid",
                "amount_subtotal": PACK_CENTS,
                "amount_total": PACK_CENTS,
                "currency": "usd",
                "customer": "cus_bench",
                "customer_details": {
                    "email": "buyer@example.com",
                    "address": {"country": "US"},
                    "tax_ids": [],
                },
                "payment_intent": f"pi_bench_{uuid.uuid4().hex[:24]}",
                "metadata": {"order_id": str(order_id)},
                "total_details": {"amount_tax": 0},
            }
        },
    }


def webhook_deliveries(orders: list[tuple[uuid.UUID, uuid.UUID, str]]) -> tuple[list[str], list[str]]:
    """The signed deliveries in the order the load sends them, and the event id of each (a redelivery of
    an event sent a few deliveries before follows every REDELIVERY_EVERY-th new one)."""
    requests: list[str] = []
    event_ids: list[str] = []
    for index, (order_id, _user_id, checkout_id) in enumerate(orders):
        event = checkout_completed(order_id, checkout_id)
        body = json.dumps(event, indent=2)
        signature = stripe.WebhookSignature.generate_signature_header(
            body, STRIPE_WEBHOOK_SECRET, timestamp=int(time.time())
        )
        headers = [
            "Content-Type: application/json; charset=utf-8",
            "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            f"Stripe-Signature: {signature}",
        ]
        requests.append(raw_request("POST", "/api/v1/webhooks/stripe", headers, body.encode()))
        event_ids.append(event["id"])
        if index % REDELIVERY_EVERY == REDELIVERY_EVERY - 1:
            requests.append(requests[-4])
            event_ids.append(event_ids[-4])
    return requests, event_ids


def environment(database_url: str, data_dir: str, queue_name: str, pool: tuple[int, int]) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET,
        "DATA_DIR": data_dir,
        "LOG_LEVEL": "INFO",  # as deployed: the access log is part of every request
        "RATE_LIMITS_ENABLED": "false",
        "EMAIL_PROVIDER": "console",
        "JOB_QUEUE": "redis",
        "JOB_QUEUE_REDIS_URL": REDIS_URL,
        "JOB_QUEUE_NAME": queue_name,
        # PostgreSQL's max_connections is shared with the test suites: 2 x 16 for the API, 2 x 6 for jobs.
        "DB_POOL_SIZE": str(pool[0]),
        "DB_MAX_OVERFLOW": str(pool[1]),
        "STRIPE_SECRET_KEY": "sk_test_bench_mixed",
        "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # a checkout.session.completed calls no Stripe API
    }


@dataclass
class Workers:
    process: subprocess.Popen[bytes]
    log_path: Path

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)


@contextmanager
def queue_workers(env: dict[str, str], processes: int, threads: int, folder: Path) -> Iterator[Workers]:
    """`pixforge worker` with the no-op engine, in a process group of its own; stopped (SIGTERM: it
    drains) at the end, and the errors its log shows printed."""
    log_path = folder / "workers.log"
    command = [sys.executable, "-m", "app.cli", "worker", "--processes", str(processes)]
    command += ["--threads", str(threads), "bench.noop_engine"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own workers
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Workers(process, log_path)
    finally:
        process.send_signal(signal.SIGTERM)  # as an orchestrator stops it: Dramatiq's main process
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        problems = [
            line
            for line in log_path.read_text(errors="replace").splitlines()
            if '"error"' in line or "Traceback" in line or "[error" in line
        ]
        if problems:
            print("--- workers log (errors, last 20) ---\n" + "\n".join(problems[-20:]), file=sys.stderr)


async def uploads(base: str, tokens: list[str]) -> list[str]:
    """One small PNG uploaded per user: the input every job of theirs names."""
    image = photo_like(64, 64)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        ids = []
        for token in tokens:
            response = await client.post(
                "/api/v1/uploads",
                headers={"Authorization": f"Bearer {token}"},
                files={"file": ("in.png", image, "image/png")},
            )
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


async def unfinished_jobs(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            statuses = [JobStatus.pending.value, JobStatus.processing.value]
            return int(await connection.scalar(select(func.count()).where(Job.status.in_(statuses))) or 0)
    finally:
        await engine.dispose()


def drain(database_url: str) -> tuple[float, int]:
    """Wait for the workers to finish every job: (seconds waited, jobs still unfinished)."""
    started = time.perf_counter()
    left = asyncio.run(unfinished_jobs(database_url))
    while left and time.perf_counter() - started < DRAIN_SECONDS:
        time.sleep(0.5)
        left = asyncio.run(unfinished_jobs(database_url))
    return time.perf_counter() - started, left


@dataclass
class Audit:
    checks: list[tuple[bool, str]] = field(default_factory=list)

    def check(self, passed: bool, text: str) -> None:
        self.checks.append((passed, text))

    @property
    def passed(self) -> bool:
        return all(passed for passed, _ in self.checks)


async def audit(
    database_url: str, sent_events: list[str], webhook: dict[str, Any], submit: dict[str, Any], left: int
) -> Audit:
    result = Audit()
    engine = create_engine(database_url)
    try:
        async with engine.connect() as db:
            ledger_sum = (
                select(func.coalesce(func.sum(CreditLedgerEntry.amount), 0))
                .where(CreditLedgerEntry.account_id == CreditAccount.id)
                .scalar_subquery()
            )
            accounts = int(await db.scalar(select(func.count()).select_from(CreditAccount)) or 0)
            off = int(await db.scalar(select(func.count()).where(CreditAccount.balance != ledger_sum)) or 0)
            result.check(
                off == 0, f"balance == sum of its ledger entries: {accounts - off}/{accounts} accounts"
            )

            settle = aliased(CreditLedgerEntry)
            open_held = (
                select(func.coalesce(func.sum(-CreditLedgerEntry.amount), 0))
                .where(
                    CreditLedgerEntry.account_id == CreditAccount.id,
                    CreditLedgerEntry.reason == LedgerReason.job_reserve.value,
                    ~select(settle.id)
                    .where(settle.idempotency_key == CreditLedgerEntry.idempotency_key + ":settle")
                    .exists(),
                )
                .scalar_subquery()
            )
            off = int(await db.scalar(select(func.count()).where(CreditAccount.reserved != open_held)) or 0)
            held = int(await db.scalar(select(func.coalesce(func.sum(CreditAccount.reserved), 0))) or 0)
            result.check(
                off == 0, f"reserved == sum of open reservations: {accounts - off}/{accounts} accounts"
            )
            result.check(held == 0, f"no credits left reserved after draining: {held} millicredits held")

            result.check(left == 0, f"no job left queued or running after draining: {left}")
            jobs = dict(
                (
                    await db.execute(
                        select(Job.status, func.count())
                        .where(Job.kind == JobKind.remove_background.value)
                        .group_by(Job.status)
                    )
                ).all()
            )
            made = sum(jobs.values())
            accepted = submit["statuses"].get("202", 0)
            lost = submit["timeouts"] + submit["errors"]  # answers never seen: such a job may exist or not
            result.check(
                accepted <= made <= accepted + lost,
                f"a job per submit answered 202: {made} jobs for {accepted} answers ({lost} unanswered); "
                + ", ".join(f"{status} {count}" for status, count in sorted(jobs.items())),
            )
            captured = int(
                await db.scalar(
                    select(func.count()).where(CreditLedgerEntry.reason == LedgerReason.job_capture.value)
                )
                or 0
            )
            completed = jobs.get(JobStatus.completed.value, 0)
            result.check(
                captured == completed,
                f"each completed job captured once: {captured} captures, {completed} jobs",
            )

            sent = set(sent_events)
            unanswered = webhook["timeouts"] + webhook["errors"]
            statuses = dict(
                (
                    await db.execute(
                        select(WebhookEvent.status, func.count())
                        .where(WebhookEvent.provider == "stripe")
                        .group_by(WebhookEvent.status)
                    )
                ).all()
            )
            recorded = sum(statuses.values())
            result.check(
                len(sent) - unanswered <= recorded <= len(sent) and set(statuses) <= {"processed"},
                f"webhook events recorded once each: {recorded} rows for {len(sent)} distinct events in "
                f"{webhook['sent']} deliveries, "
                + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())),
            )
            paid = int(
                await db.scalar(select(func.count()).where(Order.status == OrderStatus.paid.value)) or 0
            )
            purchases = (
                await db.execute(
                    select(func.count(), func.coalesce(func.sum(CreditLedgerEntry.amount), 0)).where(
                        CreditLedgerEntry.reason == LedgerReason.purchase.value
                    )
                )
            ).one()
            result.check(
                paid == statuses.get("processed", 0)
                and purchases[0] == paid
                and purchases[1] == paid * PACK_CREDITS,
                f"each paid order credited once: {paid} orders paid, {purchases[0]} purchase entries, "
                f"{purchases[1] / 1000:g} credits granted",
            )
            per_user_off = int(
                await db.scalar(
                    select(func.count()).select_from(
                        select(Order.user_id)
                        .join(CreditAccount, CreditAccount.user_id == Order.user_id)
                        .join(
                            CreditLedgerEntry,
                            and_(
                                CreditLedgerEntry.account_id == CreditAccount.id,
                                CreditLedgerEntry.idempotency_key
                                == literal("order:") + cast(Order.id, String),
                            ),
                            isouter=True,
                        )
                        .where(Order.status == OrderStatus.paid.value, CreditLedgerEntry.id.is_(None))
                        .subquery()
                    )
                )
                or 0
            )
            result.check(
                per_user_off == 0, f"each paid order's credits went to its buyer: {per_user_off} did not"
            )
            invoices = (
                await db.execute(
                    select(
                        func.count(),
                        func.count(func.distinct(TaxInvoice.order_id)),
                        func.min(TaxInvoice.sequence),
                        func.max(TaxInvoice.sequence),
                    )
                )
            ).one()
            count, orders_invoiced, low, high = invoices
            contiguous = count == 0 or (low == 1 and high == count)
            result.check(
                count == orders_invoiced == paid and contiguous,
                f"one tax invoice per paid order, numbers contiguous: {count} invoices, {orders_invoiced} "
                f"orders, sequence {low}..{high}",
            )
    finally:
        await engine.dispose()
    return result


def statuses_text(figures: dict[str, Any], expected: int | None) -> str:
    other = {status: count for status, count in figures["statuses"].items() if int(status) != expected}
    return " ".join(f"{status}:{count}" for status, count in other.items()) or "none"


ROW = "{:<9} {:>7} {:>8} {:>8} {:>8} {:>8}  {:<22} {:>8} {:>6}"


def row(name: str, figures: dict[str, Any], expected: int | None) -> str:
    return ROW.format(
        name,
        figures["requests"],
        f"{figures['rate']:.1f}",
        f"{figures['p50_ms']:.1f}",
        f"{figures['p95_ms']:.1f}",
        f"{figures['p99_ms']:.1f}",
        statuses_text(figures, expected) if expected is not None else f"non-2xx {figures['non_2xx']}",
        figures["timeouts"],
        figures["errors"],
    )


def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=5.0, help="a slower answer is a client timeout")
    parser.add_argument("--orders", type=int, default=12_000, help="orders the webhooks can pay (one each)")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=4)
    args = parser.parse_args()

    redis.Redis.from_url(REDIS_URL).flushdb()  # the bench's own queue database
    queue_name = f"pixforge-bench-mixed-{uuid.uuid4().hex[:8]}"
    with bench_database() as database_url, tempfile.TemporaryDirectory() as folder:
        seeded = asyncio.run(seed(database_url, args.users, args.orders))
        codec = LocalTokenCodec(SECRET, 3600, 3600)
        tokens = [codec.issue(user_id, "access")[0] for user_id in seeded.users]
        port = free_port()
        api_env = environment(database_url, folder, queue_name, (12, 4))
        command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
        command += ["--workers", str(args.api_workers)]
        with (
            server_process(f"pixforge serve --workers {args.api_workers}", command, api_env, port, 60) as api,
            queue_workers(
                environment(database_url, folder, queue_name, (4, 2)),
                args.worker_processes,
                args.worker_threads,
                Path(folder),
            ) as workers,
        ):
            upload_ids = asyncio.run(uploads(api.base, tokens))
            deliveries, event_ids = webhook_deliveries(seeded.orders)  # signed now: Stripe allows 5 minutes
            kinds = [
                {
                    "name": "credits",
                    "weight": WEIGHTS["credits"],
                    "requests": [
                        raw_request("GET", "/api/v1/users/credits", [f"Authorization: Bearer {t}"])
                        for t in tokens
                    ],
                },
                {
                    "name": "gallery",
                    "weight": WEIGHTS["gallery"],
                    "requests": [
                        raw_request("GET", "/api/v1/images?limit=20", [f"Authorization: Bearer {t}"])
                        for t in tokens
                    ],
                },
                {
                    "name": "submit",
                    "weight": WEIGHTS["submit"],
                    "requests": [submit_request(t, u) for t, u in zip(tokens, upload_ids, strict=True)],
                },
                {"name": "webhook", "weight": WEIGHTS["webhook"], "shared": True, "requests": deliveries},
            ]
            mix = Path(folder) / "mix.json"
            mix.write_text(json.dumps({"kinds": kinds}))
            load_before = loadavg()
            api_cpu, worker_cpu = tree_cpu_seconds(api.pid), workers.cpu_seconds()
            command = [sys.executable, "-m", "bench.loadgen", api.base, "--mix", str(mix)]
            command += ["--connections", str(args.clients), "--seconds", str(args.seconds)]
            command += ["--timeout", str(args.timeout)]
            out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout  # noqa: S603
            api_cpu = tree_cpu_seconds(api.pid) - api_cpu
            load_after = loadavg()
            result = json.loads(out)
            drained, left = drain(database_url)
            worker_cpu = workers.cpu_seconds() - worker_cpu
        checks = asyncio.run(
            audit(
                database_url,
                event_ids[: result["kinds"]["webhook"]["sent"]],
                result["kinds"]["webhook"],
                result["kinds"]["submit"],
                left,
            )
        )

    jobs_done = result["kinds"]["submit"]["statuses"].get("202", 0)
    print(
        f"mixed-load bench: PostgreSQL, `pixforge serve --workers {args.api_workers}`, `pixforge worker "
        f"--processes {args.worker_processes} --threads {args.worker_threads}` (no-op engine, Redis queue)"
    )
    print(
        f"{args.clients} clients for {args.seconds:g} s over {args.users} users; mix "
        + " / ".join(f"{weight}% {name}" for name, weight in WEIGHTS.items())
        + f"; client timeout {args.timeout:g} s"
    )
    print(f"load average (1/5/15 min) before the load: {load_before}; at its end: {load_after}")
    print(
        ROW.format(
            "kind", "reqs", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors by status", "timeouts", "conn"
        )
    )
    print(row("all", result, None))
    for name, figures in result["kinds"].items():
        print(row(name, figures, EXPECTED[name]))
    webhook = result["kinds"]["webhook"]
    print(
        f"webhooks: {webhook['sent']} deliveries of {len(set(event_ids[: webhook['sent']]))} events "
        f"({webhook['sent'] - len(set(event_ids[: webhook['sent']]))} redeliveries, answered 200 'duplicate')"
    )
    answered = result["requests"]
    print(
        f"API CPU: {api_cpu * 1000 / answered:.2f} ms per request ({api_cpu:.1f} s over the run, "
        f"{api_cpu / result['seconds'] * 100:.0f}% of one core)"
        if answered
        else "API CPU: no request answered"
    )
    print(
        f"worker CPU: {worker_cpu:.1f} s for {jobs_done} jobs "
        f"({worker_cpu * 1000 / max(jobs_done, 1):.2f} ms per job), "
        f"queue drained {drained:.1f} s after the load"
    )
    print(
        f"load generator CPU: {result['cpu_seconds']:.1f} s "
        f"({result['cpu_seconds'] / result['seconds'] * 100:.0f}% of one core)"
    )
    print("ledger audit:")
    for passed, text in checks.checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {text}")
    print(f"audit: {'PASS' if checks.passed else 'FAIL'}")
    if not checks.passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

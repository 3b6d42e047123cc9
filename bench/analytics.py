"""Admin analytics and reports at scale on PostgreSQL.

Seeds a throw-away database with COPY (10k users, 1 million ledger rows, 100k jobs, 20k orders over a
year), runs VACUUM ANALYZE, then:
- times the analytics summary (every query of GET admin/analytics/summary, through the service) for a
  year by month and a quarter by day, and prints EXPLAIN ANALYZE of each of its queries;
- streams the 1-million-row ledger report as CSV and as XLSX in a child process each and prints rows/s and
  the child's peak RSS.

    .venv/bin/python -m bench.analytics [--ledger-rows 1000000] [--jobs 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url

from app.config import Settings
from app.container import Container
from app.db.session import Database, create_engine
from app.repositories.analytics import Period
from app.services import analytics, reports
from bench.common import ROOT, bench_database

END = datetime(2026, 12, 1, tzinfo=UTC)
START = END - timedelta(days=365)
REASONS = [
    ("job_reserve", -1000, 45),
    ("job_capture", 0, 35),
    ("job_release", 1000, 10),
    ("purchase", 100_000, 4),
    ("signup_bonus", 10_000, 3),
    ("refund", -50_000, 1),
    ("admin_adjustment", 2_500, 2),
]


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _moment(rng: random.Random) -> datetime:
    return START + timedelta(seconds=rng.random() * 365 * 86400)


async def seed(url: str, ledger_rows: int, jobs: int, users: int = 10_000, orders: int = 20_000) -> None:
    rng = random.Random(7)
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        started = time.perf_counter()
        user_ids = [uuid.uuid4() for _ in range(users)]
        account_ids = [uuid.uuid4() for _ in range(users)]
        user_rows = []
        for n, user_id in enumerate(user_ids):
            created = _moment(rng)
            user_rows.append((user_id, f"u{n}@bench.test", "free", "user", True, created, created))
        await connection.copy_records_to_table(
            "users",
            records=user_rows,
            columns=["id", "email", "plan", "role", "is_active", "created_at", "updated_at"],
        )
        now = datetime.now(UTC)
        await connection.copy_records_to_table(
            "credit_accounts",
            records=[(a, u, 10**6, 0, now) for a, u in zip(account_ids, user_ids, strict=True)],
            columns=["id", "user_id", "balance", "reserved", "updated_at"],
        )
        weights = [weight for _, _, weight in REASONS]
        batch: list[tuple[Any, ...]] = []
        for n in range(ledger_rows):
            reason, amount, _ = rng.choices(REASONS, weights)[0]
            batch.append(
                (uuid.uuid4(), rng.choice(account_ids), amount, reason, None, f"b{n}", 10**6, _moment(rng))
            )
            if len(batch) == 100_000:
                await _copy_ledger(connection, batch)
                batch = []
        if batch:
            await _copy_ledger(connection, batch)
        kinds = ["remove_background", "vectorize", "generate"]
        job_rows = []
        for _ in range(jobs):
            created = _moment(rng)
            status = rng.choices(["COMPLETED", "FAILED", "PENDING"], [90, 8, 2])[0]
            took = int(rng.lognormvariate(6, 0.8)) if status == "COMPLETED" else None
            job_rows.append(
                (
                    uuid.uuid4(),
                    rng.choice(user_ids),
                    rng.choice(kinds),
                    status,
                    "[]",
                    "{}",
                    1000,
                    0,
                    took,
                    False,
                    created,
                    created,
                )
            )
        await connection.copy_records_to_table(
            "jobs",
            records=job_rows,
            columns=[
                "id",
                "user_id",
                "kind",
                "status",
                "outputs",
                "options",
                "credits_reserved",
                "attempts",
                "time_taken_ms",
                "is_favourite",
                "created_at",
                "updated_at",
            ],
        )
        order_rows = []
        for n in range(orders):
            created = _moment(rng)
            status = rng.choices(["paid", "created", "failed", "refunded"], [70, 15, 10, 5])[0]
            paid = created if status in ("paid", "refunded") else None
            provider, currency = rng.choice([("stripe", "USD"), ("razorpay", "INR"), ("dodo", "EUR")])
            order_rows.append(
                (
                    uuid.uuid4(),
                    rng.choice(user_ids),
                    provider,
                    "credit_pack",
                    100_000,
                    999,
                    currency,
                    status,
                    f"bench-{n}",
                    paid,
                    999 if status == "refunded" else 0,
                    created,
                    created,
                )
            )
        await connection.copy_records_to_table(
            "orders",
            records=order_rows,
            columns=[
                "id",
                "user_id",
                "provider",
                "kind",
                "credits",
                "amount",
                "currency",
                "status",
                "provider_order_id",
                "paid_at",
                "refunded_amount",
                "created_at",
                "updated_at",
            ],
        )
        seeded = time.perf_counter() - started
        await connection.execute("VACUUM ANALYZE")
        print(
            f"seeded {users} users, {ledger_rows} ledger rows, {jobs} jobs, {orders} orders "
            f"in {seeded:.1f} s (+ VACUUM ANALYZE {time.perf_counter() - started - seeded:.1f} s)"
        )
    finally:
        await connection.close()


async def _copy_ledger(connection: asyncpg.Connection, batch: list[tuple[Any, ...]]) -> None:
    await connection.copy_records_to_table(
        "credit_ledger",
        records=batch,
        columns=[
            "id",
            "account_id",
            "amount",
            "reason",
            "reference",
            "idempotency_key",
            "balance_after",
            "created_at",
        ],
    )


async def time_summary(url: str) -> None:
    database = Database(create_engine(url))
    captured: list[tuple[str, Any]] = []

    def capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        captured.append((statement, parameters))

    cases = [
        ("year by month", Period(START, END), analytics.Granularity.month),
        ("year by week", Period(START, END), analytics.Granularity.week),
        ("quarter by day", Period(END - timedelta(days=91), END), analytics.Granularity.day),
    ]
    print(f"\n{'summary':<16} {'runs':>5} {'best ms':>9} {'median ms':>10}")
    for name, period, granularity in cases:
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            async with database.session_scope() as session:
                await analytics.summary(session, period, granularity, 400)
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        print(f"{name:<16} {len(timings):>5} {timings[0]:>9.1f} {timings[len(timings) // 2]:>10.1f}")

    event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
    async with database.session_scope() as session:
        await analytics.summary(session, Period(START, END), analytics.Granularity.month, 400)
    event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
    print("\nEXPLAIN ANALYZE of each query (year by month):")
    async with database.engine.connect() as connection:
        for statement, parameters in captured:
            plan = await connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            print("\n" + " ".join(statement.split())[:300])
            for (line,) in plan.all():
                print("   " + line)
    await database.dispose()


async def stream_report(url: str, report_format: str) -> None:
    """Child process: stream the year's ledger report and print rows, bytes, seconds and peak RSS."""
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    database = Database(create_engine(url))
    container = Container.build(settings, database)
    report = reports.open_report(
        container, reports.ReportKind.ledger, reports.ReportFormat(report_format), Period(START, END), 2000
    )
    started = time.perf_counter()
    size = 0
    async for chunk in report.body:
        size += len(chunk)
    seconds = time.perf_counter() - started
    await container.aclose()
    await database.dispose()
    status = await asyncio.to_thread(Path("/proc/self/status").read_text)
    peak = next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    print(f"{report_format} {seconds:.3f} {size} {peak:.1f}")


def run_report(url: str, report_format: str, rows: int) -> None:
    output = subprocess.run(  # noqa: S603 - this very module
        [sys.executable, "-m", "bench.analytics", "--child-report", report_format, "--url", url],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    _, seconds, size, peak = output[-4:]
    print(
        f"{report_format:<8} {rows:>9} {float(seconds):>8.1f} {rows / float(seconds):>10.0f} "
        f"{int(size) / 2**20:>9.1f} {float(peak):>13.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ledger-rows", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--child-report")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child_report:
        asyncio.run(stream_report(args.url, args.child_report))
        return
    with bench_database() as url:
        asyncio.run(seed(url, args.ledger_rows, args.jobs))
        asyncio.run(time_summary(url))
        print(
            f"\n{'report':<8} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'MiB out':>9} {'peak RSS MiB':>13}"
        )
        for report_format in ("csv", "xlsx"):
            run_report(url, report_format, args.ledger_rows)


if __name__ == "__main__":
    main()

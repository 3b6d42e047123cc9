"""Backups as an operator relies on them: a backup restored into an empty database answers the same
balances, ledgers, orders and files; a damaged or misplaced restore changes nothing; retention keeps the
newest and never runs after a failure; a backup taken under writes is consistent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import func, inspect, select

from app.config import Settings
from app.db.base import utcnow
from app.db.session import Database, create_engine
from app.integrations.backup_store import DirectoryBackupStore, S3BackupStore
from app.integrations.database_dumps import DumpError, MissingTool
from app.models import CreditAccount, CreditLedgerEntry, LedgerReason, Order, User
from app.services import backups, credits
from app.services import users as users_service
from tests.conftest import make_settings
from tests.factories import make_order
from tests.fakes.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, PresignedS3Server
from tests.support.databases import TestDatabase, fresh_database, migrate

FILE_KEY = Path("users") / "someone" / "cut-out.png"
FILE_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@pytest.fixture
def source(test_database: TestDatabase) -> Iterator[str]:
    with fresh_database(test_database) as url:
        migrate(url)
        yield url


@pytest.fixture
def target(test_database: TestDatabase) -> Iterator[str]:
    with fresh_database(test_database) as url:
        yield url


def settings_for(url: str, data_dir: Path, **overrides: Any) -> Settings:
    return make_settings(database_url=url, data_dir=data_dir, **overrides)


async def populate(settings: Settings, users: int = 3) -> list[uuid.UUID]:
    engine = create_engine(settings.resolved_database_url)
    database = Database(engine)
    ids = []
    try:
        for number in range(users):
            async with database.session_scope() as session:
                user = await users_service.create_user(
                    session,
                    settings,
                    email=f"{uuid.uuid4().hex[:10]}@example.com",
                    email_verified_at=utcnow(),
                )
                await credits.grant(
                    session, user.id, 5_000 * (number + 1), LedgerReason.purchase, f"p-{user.id}"
                )
                await credits.debit(session, user.id, 700, LedgerReason.admin_adjustment, f"d-{user.id}")
                await make_order(session, user)
                ids.append(user.id)
    finally:
        await engine.dispose()
    stored = settings.storage_dir / FILE_KEY
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(FILE_BYTES)
    return ids


async def state(url: str) -> dict[str, Any]:
    """What a client would read back: balances by email, every ledger line, every order."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            balances = (
                await connection.execute(
                    select(User.email, CreditAccount.balance, CreditAccount.reserved)
                    .join(CreditAccount, CreditAccount.user_id == User.id)
                    .order_by(User.email)
                )
            ).all()
            ledger = (
                await connection.execute(
                    select(
                        CreditLedgerEntry.idempotency_key,
                        CreditLedgerEntry.amount,
                        CreditLedgerEntry.reason,
                        CreditLedgerEntry.balance_after,
                    ).order_by(CreditLedgerEntry.idempotency_key)
                )
            ).all()
            orders = (
                await connection.execute(
                    select(Order.id, Order.status, Order.amount, Order.currency).order_by(Order.id)
                )
            ).all()
    finally:
        await engine.dispose()
    return {
        "balances": [tuple(row) for row in balances],
        "ledger": [tuple(row) for row in ledger],
        "orders": [tuple(row) for row in orders],
    }


async def unbalanced_accounts(url: str) -> list[uuid.UUID]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            sums = (
                select(CreditLedgerEntry.account_id, func.sum(CreditLedgerEntry.amount).label("total"))
                .group_by(CreditLedgerEntry.account_id)
                .subquery()
            )
            rows = await connection.execute(
                select(CreditAccount.id)
                .join(sums, sums.c.account_id == CreditAccount.id)
                .where(sums.c.total != CreditAccount.balance)
            )
            return list(rows.scalars())
    finally:
        await engine.dispose()


async def test_a_restored_instance_answers_the_same_balances_ledgers_orders_and_files(
    source: str, target: str, tmp_path: Path
) -> None:
    origin = settings_for(source, tmp_path / "origin")
    await populate(origin)
    store = DirectoryBackupStore(tmp_path / "backups")

    manifest = await backups.take(origin, store, include_storage=True)

    assert store.names() == [manifest.name]
    assert manifest.schema_revision is not None
    assert manifest.counts["users"] == 3
    assert set(manifest.files) == {manifest.database_file, backups.STORAGE_ARCHIVE}
    copy = settings_for(target, tmp_path / "copy")
    restored = await backups.restore(copy, store.fetch(manifest.name, tmp_path), force=False)
    assert restored.name == manifest.name
    assert await state(target) == await state(source)
    assert (copy.storage_dir / FILE_KEY).read_bytes() == FILE_BYTES


async def test_a_database_that_holds_rows_is_refused_unless_forced(source: str, tmp_path: Path) -> None:
    origin = settings_for(source, tmp_path / "origin")
    await populate(origin, users=1)
    store = DirectoryBackupStore(tmp_path / "backups")
    manifest = await backups.take(origin, store, include_storage=False)
    before = await state(source)
    await populate(origin, users=1)
    grown = await state(source)

    with pytest.raises(backups.BackupRefused, match="not empty"):
        await backups.restore(origin, store.fetch(manifest.name, tmp_path), force=False)
    assert await state(source) == grown

    await backups.restore(origin, store.fetch(manifest.name, tmp_path), force=True)
    assert await state(source) == before


async def test_a_damaged_backup_is_refused_before_anything_changes(
    source: str, target: str, tmp_path: Path
) -> None:
    origin = settings_for(source, tmp_path / "origin")
    await populate(origin, users=1)
    store = DirectoryBackupStore(tmp_path / "backups")
    manifest = await backups.take(origin, store, include_storage=False)
    folder = store.fetch(manifest.name, tmp_path)
    damaged = folder / manifest.database_file
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    with pytest.raises(backups.BackupRefused, match="checksum"):
        await backups.restore(settings_for(target, tmp_path / "copy"), folder, force=False)
    engine = create_engine(target)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    assert tables == []


async def test_retention_keeps_the_newest_and_never_runs_after_a_failed_backup(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryBackupStore(tmp_path / "backups")
    start = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    for day in range(4):
        await backups.take(
            settings_for(source, tmp_path / "origin", backup_keep=2),
            store,
            include_storage=False,
            now=start + timedelta(days=day),
        )
    assert store.names() == ["pixforge-20261203T030000Z", "pixforge-20261204T030000Z"]

    # SQLite: the file is gone; the others: their dump tool is (a failure either way, before any save).
    monkeypatch.setenv("PATH", str(tmp_path))
    broken = settings_for(
        f"{source}-missing" if "sqlite" in source else source, tmp_path / "origin", backup_keep=1
    )
    with pytest.raises(DumpError):
        await backups.take(broken, store, include_storage=False, now=start + timedelta(days=5))
    assert store.names() == ["pixforge-20261203T030000Z", "pixforge-20261204T030000Z"]

    assert backups.prune(store, keep=0) == ["pixforge-20261203T030000Z"]
    assert store.names() == ["pixforge-20261204T030000Z"]


def test_a_backup_is_due_only_once_its_interval_has_passed(tmp_path: Path) -> None:
    store = DirectoryBackupStore(tmp_path)
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert backups.is_due(store, timedelta(hours=24), now)
    folder = tmp_path / "pixforge-20261205T010000Z"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    assert not backups.is_due(store, timedelta(hours=24), now)
    assert backups.is_due(store, timedelta(hours=24), now + timedelta(hours=14))


async def test_a_backup_taken_while_credits_move_is_consistent(
    source: str, target: str, tmp_path: Path, test_database: TestDatabase
) -> None:
    origin = settings_for(source, tmp_path / "origin")
    user_ids = await populate(origin, users=4)
    assert await unbalanced_accounts(source) == []
    engine = create_engine(source)
    database = Database(engine)
    stop = asyncio.Event()
    under_way = asyncio.Event()
    moved = 0

    async def keep_spending() -> None:
        nonlocal moved
        while not stop.is_set():
            user_id = user_ids[moved % len(user_ids)]
            async with database.session_scope() as session:
                await credits.debit(session, user_id, 1, LedgerReason.admin_adjustment, f"w-{uuid.uuid4()}")
            moved += 1
            if moved >= 5:
                under_way.set()
            await asyncio.sleep(0)

    writer = asyncio.create_task(keep_spending())
    try:
        await under_way.wait()
        manifest = await backups.take(origin, DirectoryBackupStore(tmp_path / "b"), include_storage=False)
    finally:
        stop.set()
        await writer
        await engine.dispose()

    await backups.restore(
        settings_for(target, tmp_path / "copy"), tmp_path / "b" / manifest.name, force=False
    )
    assert await unbalanced_accounts(target) == []
    if test_database.id != "mariadb":
        assert manifest.counts["credit_ledger"] > 4 * 3


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = PresignedS3Server()
    server.start()
    try:
        yield server.endpoint_url
    finally:
        server.stop()


async def test_backups_on_s3_are_listed_fetched_restored_and_pruned(
    source: str, target: str, tmp_path: Path, s3_endpoint: str
) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    bucket = f"backups-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    store = S3BackupStore(client, bucket, "nightly")
    origin = settings_for(source, tmp_path / "origin", backup_keep=1)
    await populate(origin, users=1)
    first = await backups.take(origin, store, include_storage=True, now=datetime(2026, 12, 4, tzinfo=UTC))
    # An upload cut off before its manifest is not a backup: never listed, never counted.
    client.put_object(Bucket=bucket, Key="nightly/pixforge-20261206T000000Z/database.sqlite3", Body=b"x")
    second = await backups.take(origin, store, include_storage=True, now=datetime(2026, 12, 5, tzinfo=UTC))

    assert store.names() == [second.name]
    assert first.name != second.name
    copy = settings_for(target, tmp_path / "copy")
    await backups.restore(copy, store.fetch(second.name, tmp_path / "download"), force=False)
    assert await state(target) == await state(source)
    assert (copy.storage_dir / FILE_KEY).read_bytes() == FILE_BYTES


@pytest.mark.postgres_only
async def test_a_missing_dump_tool_is_named(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingTool, match="pg_dump not found"):
        await backups.take(
            settings_for(source, tmp_path), DirectoryBackupStore(tmp_path / "b"), include_storage=False
        )
    assert DirectoryBackupStore(tmp_path / "b").names() == []


def test_the_commands_back_up_and_restore_the_embedded_default(tmp_path: Path) -> None:
    pixforge = [sys.executable, "-m", "app.cli"]

    def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BACKUP_"))}
        env.update(DATA_DIR=str(data_dir), ENVIRONMENT="development", LOG_FORMAT="json")
        return subprocess.run([*pixforge, *args], env=env, capture_output=True, text=True, timeout=120)

    origin, copy, folder = tmp_path / "origin", tmp_path / "copy", tmp_path / "kept"
    assert run(origin, "migrate").returncode == 0
    backed_up = run(origin, "backup", "--to", str(folder))
    assert backed_up.returncode == 0, backed_up.stderr
    (name,) = DirectoryBackupStore(folder).names()

    restored = run(copy, "restore", str(folder / name))
    assert restored.returncode == 0, restored.stderr
    assert f"restored {name}" in restored.stdout
    again = run(copy, "restore", str(folder / name))
    assert again.returncode != 0
    assert "not empty" in again.stderr

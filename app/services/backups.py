"""Backups: a consistent snapshot of the database plus, optionally, the local storage tree, described
by a manifest (time, schema revision, row counts, checksums) and kept in a folder or on S3; the newest
N are kept, pruned only after a backup succeeded. A restore goes into an empty database only (unless
forced), checks every checksum before it touches anything and the row counts after."""

from __future__ import annotations

import asyncio
import hashlib
import json
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from app.config import Settings
from app.integrations import database_dumps
from app.integrations.backup_store import MANIFEST, BackupStore, DirectoryBackupStore, S3BackupStore

log = structlog.get_logger("app.backups")

NAME_PREFIX = "pixforge-"
NAME_TIME = "%Y%m%dT%H%M%SZ"
STORAGE_ARCHIVE = "storage.tar.gz"
FORMAT = 1


class BackupRefused(Exception):
    """The operation would lose or corrupt data: the message says what to do instead."""


@dataclass(frozen=True)
class Manifest:
    name: str
    created_at: str
    dialect: str
    schema_revision: str | None
    counts: dict[str, int]
    counts_exact: bool
    database_file: str
    files: dict[str, dict[str, Any]]
    format: int = FORMAT

    @property
    def has_storage(self) -> bool:
        return STORAGE_ARCHIVE in self.files

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise BackupRefused(f"{folder} holds no {MANIFEST}: not a complete Pixforge backup")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise BackupRefused(f"unknown backup format {data.get('format')!r}")
        return cls(**data)


def store_for(settings: Settings, destination: str | None = None) -> BackupStore:
    """`destination` is a folder, "s3" (the storage bucket under BACKUP_S3_PREFIX), or None (settings)."""
    chosen = destination or settings.backup_destination
    if chosen == "s3":
        from app.container import s3_client_for

        return S3BackupStore(s3_client_for(settings), settings.s3_bucket, settings.backup_s3_prefix)
    if chosen == "dir":
        return DirectoryBackupStore(settings.resolved_backup_dir)
    return DirectoryBackupStore(Path(chosen))


def backup_time(name: str) -> datetime | None:
    try:
        return datetime.strptime(name.removeprefix(NAME_PREFIX), NAME_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


async def take(
    settings: Settings, store: BackupStore, *, include_storage: bool, now: datetime | None = None
) -> Manifest:
    """One backup saved to `store`, then retention; a failed backup raises and prunes nothing."""
    created = now or datetime.now(UTC)
    name = f"{NAME_PREFIX}{created.strftime(NAME_TIME)}"
    if name in store.names():
        raise BackupRefused(f"a backup named {name} already exists")
    with tempfile.TemporaryDirectory(prefix="pixforge-backup-") as scratch:
        folder = Path(scratch) / name
        folder.mkdir()
        snap = await database_dumps.snapshot(settings.resolved_database_url, folder)
        if include_storage and settings.storage_backend == "local":
            await asyncio.to_thread(_pack, settings.storage_dir, folder / STORAGE_ARCHIVE)
        files = await asyncio.to_thread(_describe, folder)
        manifest = Manifest(
            name=name,
            created_at=created.isoformat(),
            dialect=snap.dialect,
            schema_revision=snap.revision,
            counts=snap.counts,
            counts_exact=snap.counts_exact,
            database_file=snap.file,
            files=files,
        )
        (folder / MANIFEST).write_text(manifest.to_json())
        await asyncio.to_thread(store.save, name, folder)
    removed = await asyncio.to_thread(prune, store, settings.backup_keep)
    log.info("backup.saved", name=name, where=store.description, files=len(files), pruned=removed)
    return manifest


def prune(store: BackupStore, keep: int) -> list[str]:
    """Removes all but the newest `keep` complete backups (the newest one always stays)."""
    names = [name for name in store.names() if backup_time(name) is not None]
    doomed = names[: -max(keep, 1)]
    for name in doomed:
        store.remove(name)
    return doomed


async def restore(settings: Settings, folder: Path, *, force: bool) -> Manifest:
    manifest = Manifest.read(folder)
    await asyncio.to_thread(_verify, folder, manifest)
    url = settings.resolved_database_url
    dialect = database_dumps.dialect_of(url)
    if dialect != manifest.dialect:
        raise BackupRefused(f"this backup is of a {manifest.dialect} database; the target is {dialect}")
    existing = await database_dumps.row_counts(url)
    filled = sorted(name for name, count in existing.items() if count)
    if filled and not force:
        raise BackupRefused(f"the target database is not empty ({', '.join(filled[:5])}...): use --force")
    storage = settings.storage_dir
    if manifest.has_storage and storage.is_dir() and any(storage.iterdir()) and not force:
        raise BackupRefused(f"the storage folder {storage} is not empty: use --force")

    await database_dumps.restore(url, folder / manifest.database_file, clean=bool(existing))
    if manifest.counts_exact:
        restored = await database_dumps.row_counts(url)
        if restored != manifest.counts:
            differ = sorted(
                k
                for k in restored.keys() | manifest.counts.keys()
                if restored.get(k) != manifest.counts.get(k)
            )
            raise database_dumps.DumpError(f"restored row counts differ from the manifest in {differ}")
    if manifest.has_storage:
        await asyncio.to_thread(_unpack, folder / STORAGE_ARCHIVE, storage)
    log.info("backup.restored", name=manifest.name, revision=manifest.schema_revision)
    return manifest


def is_due(store: BackupStore, interval: timedelta, now: datetime) -> bool:
    times = [stamp for stamp in map(backup_time, store.names()) if stamp is not None]
    return not times or now - max(times) >= interval


async def run_forever(settings: Settings, check_every_seconds: float) -> None:
    """The daily backup of the housekeeping loop (BACKUP_SCHEDULE_ENABLED): failures are logged and
    retried at the next check, and they never prune."""
    store = store_for(settings)
    interval = timedelta(hours=settings.backup_interval_hours)
    while True:
        try:
            if await asyncio.to_thread(is_due, store, interval, datetime.now(UTC)):
                await take(settings, store, include_storage=settings.backup_include_storage)
        except Exception:
            log.exception("backup.failed", where=store.description)
        await asyncio.sleep(check_every_seconds)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        path.name: {"sha256": _sha256(path), "bytes": path.stat().st_size}
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def _verify(folder: Path, manifest: Manifest) -> None:
    for file_name, facts in manifest.files.items():
        path = folder / file_name
        if not path.is_file() or _sha256(path) != facts["sha256"]:
            raise BackupRefused(f"{file_name} is missing or does not match its checksum: backup damaged")


def _pack(root: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        if root.is_dir():
            for path in sorted(root.iterdir()):
                tar.add(path, arcname=path.name)


def _unpack(archive: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        # The "data" filter refuses absolute paths, links out of the tree and device files.
        tar.extractall(root, filter="data")

"""`pixforge serve`, `worker`, `migrate`, `sweep`, `create-admin`, `set-role`, `backup` and `restore`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.config import Config

from alembic import command
from app.config import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic's configuration, found from the working directory or next to the package."""
    candidates = [Path(os.environ.get("PIXFORGE_ALEMBIC_INI", "alembic.ini")), PROJECT_ROOT / "alembic.ini"]
    ini = next((path for path in candidates if path.is_file()), None)
    if ini is None:
        raise SystemExit("alembic.ini not found: run from the project folder or set PIXFORGE_ALEMBIC_INI")
    config = Config(str(ini))
    config.set_main_option("script_location", str(ini.resolve().parent / "alembic"))
    if database_url:
        # ConfigParser treats % as interpolation; URLs may carry percent-encoded passwords.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(revision: str = "head") -> None:
    command.upgrade(alembic_config(get_settings().resolved_database_url), revision)


def sweep() -> None:
    """One housekeeping round: retention, expired tokens, abandoned jobs (failed and refunded)."""
    import asyncio

    from app.container import Container
    from app.db.session import Database
    from app.logging import configure_logging
    from app.services import images as images_service
    from app.services import sessions_sweep
    from app.tasks import dispatch, recovery, runner

    settings = get_settings()
    configure_logging(settings)

    async def round_() -> None:
        database = Database.from_settings(settings)
        container = Container.build(settings, database)
        try:
            removed = await images_service.sweep_expired(container)
            async with database.session_scope() as session:
                swept = await sessions_sweep.sweep_expired(session)
            rerun = await recovery.recover(container)
            if container.job_queue is None:
                for job_id in rerun:
                    await runner.run(container, job_id)
            else:  # the workers run them
                await dispatch.dispatcher_for(container).resume(rerun)
            print({"images": removed, "tokens": swept})  # noqa: T201 - the command's output
        finally:
            await container.aclose()
            await database.dispose()

    asyncio.run(round_())


def _read_password(from_stdin: bool) -> str:
    """The new admin's password: one line of stdin (`--password-stdin`, or when stdin is not a terminal),
    else asked twice without echo."""
    import getpass

    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password for the new admin: ")
    if getpass.getpass("Repeat it: ") != password:
        raise SystemExit("the passwords differ")
    return password


def _with_session(work: Callable[[AsyncSession, Settings], Awaitable[str]]) -> None:
    import asyncio

    from app.db.session import Database

    settings = get_settings()

    async def run() -> str:
        database = Database.from_settings(settings)
        try:
            async with database.session_scope() as session:
                return await work(session, settings)
        finally:
            await database.dispose()

    try:
        message = asyncio.run(run())
    except (LookupError, ValueError) as exc:
        raise SystemExit(f"pixforge: {exc}") from exc
    print(message)  # noqa: T201 - the command's output


def create_admin(email: str, password_stdin: bool) -> None:
    """Make EMAIL an administrator, creating the account (verified) when it does not exist."""
    from app.repositories.users import UserRepository
    from app.security import PasswordHasher
    from app.services import admin as admin_service
    from app.services.users import normalize_email

    async def work(session: AsyncSession, settings: Settings) -> str:
        exists = await UserRepository(session).get_by_email(normalize_email(email)) is not None
        password = None if exists else _read_password(password_stdin)
        user, created = await admin_service.create_admin(
            session, settings, PasswordHasher.from_settings(settings), email, password
        )
        return f"{'created' if created else 'promoted'} admin {user.email} ({user.id})"

    _with_session(work)


def set_role(email: str, role: str) -> None:
    from app.services import admin as admin_service

    async def work(session: AsyncSession, settings: Settings) -> str:
        user = await admin_service.set_role(session, email, role)
        return f"{user.email} is now {user.role}"

    _with_session(work)


def backup(destination: str | None, include_storage: bool | None) -> None:
    """A backup now, then retention; prints the manifest. Exit status 1 with the reason on failure."""
    import asyncio

    from app.integrations.database_dumps import DumpError
    from app.services import backups

    settings = get_settings()
    store = backups.store_for(settings, destination)
    storage = settings.backup_include_storage if include_storage is None else include_storage
    try:
        manifest = asyncio.run(backups.take(settings, store, include_storage=storage))
    except (DumpError, backups.BackupRefused) as exc:
        raise SystemExit(f"backup failed: {exc}") from exc
    print(f"saved {manifest.name} to {store.description}")  # noqa: T201 - the command's output
    print(manifest.to_json())  # noqa: T201 - the command's output


def restore(source: str, force: bool) -> None:
    """Restores a backup folder (or `s3:NAME` from the configured bucket) into this instance."""
    import asyncio
    import tempfile

    from app.integrations.database_dumps import DumpError
    from app.services import backups

    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="pixforge-restore-") as scratch:
        if source.startswith("s3:"):
            name = source.removeprefix("s3:")
            folder = backups.store_for(settings, "s3").fetch(name, Path(scratch))
        else:
            folder = Path(source)
        try:
            manifest = asyncio.run(backups.restore(settings, folder, force=force))
        except (DumpError, backups.BackupRefused) as exc:
            raise SystemExit(f"restore failed: {exc}") from exc
    revision = manifest.schema_revision
    print(f"restored {manifest.name} (schema {revision}); run `pixforge migrate` next")  # noqa: T201


def schema_problem(database_url: str) -> str | None:
    """Why the database's schema is not the one this code runs on (none yet, behind, or newer than
    this version knows), or None when it is. A database that cannot be reached is not checked here:
    the server's start-up reports it."""
    import asyncio

    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection
    from sqlalchemy.exc import SQLAlchemyError

    from app.db.session import create_engine

    scripts = ScriptDirectory.from_config(alembic_config(database_url))
    heads = set(scripts.get_heads())

    def current(connection: Connection) -> set[str]:
        return set(MigrationContext.configure(connection).get_current_heads())

    async def read() -> set[str]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(current)
        finally:
            await engine.dispose()

    try:
        found = asyncio.run(read())
    except (OSError, SQLAlchemyError):
        return None
    if found == heads:
        return None
    if not found:
        return "the database has no schema yet: run `pixforge migrate` first"
    known = {revision.revision for revision in scripts.walk_revisions()}
    if not found <= known:
        newer = ", ".join(sorted(found - known))
        return f"the database's schema ({newer}) is newer than this version of Pixforge knows"
    return "the database's schema is behind this version: run `pixforge migrate` first"


def serve(host: str | None, port: int | None, reload: bool, workers: int) -> None:
    import uvicorn

    settings = get_settings()
    problem = schema_problem(settings.resolved_database_url)
    if problem is not None:
        raise SystemExit(f"pixforge serve: {problem}")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        reload=reload,
        workers=workers,
        proxy_headers=True,
        access_log=False,
        log_config=None,
    )


def worker(processes: int, threads: int, modules: list[str]) -> None:
    """Queue workers (JOB_QUEUE=redis|rabbitmq): Dramatiq's own process manager with
    app.tasks.worker as the broker module, PROCESSES processes of THREADS threads (jobs at once per
    process). SIGTERM drains: each process finishes the jobs it runs, gives back those it had fetched
    but not started, then exits. MODULES are imported in every worker process (plug-in engines)."""
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    settings = get_settings()
    if settings.job_queue == "inline":
        raise SystemExit(
            "pixforge worker needs JOB_QUEUE=redis or JOB_QUEUE=rabbitmq (inline jobs run in the API)"
        )
    arguments = [
        "app.tasks.worker:broker",
        *modules,
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--queues",
        settings.job_queue_name,
        # A draining process may finish a job for up to its lease before it is killed.
        "--worker-shutdown-timeout",
        str(settings.job_lease_seconds * 1000),
    ]
    parsed = make_argument_parser().parse_args(arguments)  # type: ignore[no-untyped-call]
    raise SystemExit(dramatiq_main(parsed))  # type: ignore[no-untyped-call]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pixforge", description="Pixforge backend")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the API with uvicorn")
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)
    serve_parser.add_argument("--reload", action="store_true")
    serve_parser.add_argument("--workers", type=int, default=1)
    worker_parser = commands.add_parser("worker", help="run queued jobs (JOB_QUEUE=redis or rabbitmq)")
    worker_parser.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    worker_parser.add_argument("--threads", type=int, default=4, help="jobs at once per process (default 4)")
    worker_parser.add_argument("modules", nargs="*", help="modules to import in each worker process")
    migrate_parser = commands.add_parser("migrate", help="apply database migrations (alembic upgrade)")
    migrate_parser.add_argument("revision", nargs="?", default="head")
    commands.add_parser("sweep", help="delete images past their retention, expired tokens; recover jobs")
    admin_parser = commands.add_parser("create-admin", help="make EMAIL an admin (created if missing)")
    admin_parser.add_argument("email")
    admin_parser.add_argument(
        "--password-stdin", action="store_true", help="read a new account's password from stdin"
    )
    role_parser = commands.add_parser("set-role", help="set the role (user or admin) of EMAIL's account")
    role_parser.add_argument("email")
    role_parser.add_argument("role", choices=["user", "admin"])

    backup_parser = commands.add_parser("backup", help="back up the database (and local storage), then prune")
    backup_parser.add_argument(
        "--to", dest="destination", help="a folder, or s3 (default: BACKUP_DESTINATION)"
    )
    backup_parser.add_argument(
        "--storage", action=argparse.BooleanOptionalAction, help="include the local storage tree"
    )
    restore_parser = commands.add_parser("restore", help="restore a backup into an empty database")
    restore_parser.add_argument("path", help="a backup folder, or s3:NAME")
    restore_parser.add_argument("--force", action="store_true", help="overwrite a database that holds rows")

    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.reload, args.workers)
    elif args.command == "worker":
        worker(args.processes, args.threads, args.modules)
    elif args.command == "migrate":
        migrate(args.revision)
    elif args.command == "sweep":
        sweep()
    elif args.command == "create-admin":
        create_admin(args.email, args.password_stdin)
    elif args.command == "set-role":
        set_role(args.email, args.role)
    elif args.command == "backup":
        backup(args.destination, args.storage)
    elif args.command == "restore":
        restore(args.path, args.force)


if __name__ == "__main__":
    main(sys.argv[1:])

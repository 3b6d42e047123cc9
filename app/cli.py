"""`pixforge serve` and `pixforge migrate`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from alembic.config import Config

from alembic import command
from app.config import get_settings

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
    from app.tasks import recovery, runner

    settings = get_settings()
    configure_logging(settings)

    async def round_() -> None:
        database = Database.from_settings(settings)
        container = Container.build(settings, database)
        try:
            removed = await images_service.sweep_expired(container)
            async with database.session_scope() as session:
                swept = await sessions_sweep.sweep_expired(session)
            for job_id in await recovery.recover(container):
                await runner.run(container, job_id)
            print({"images": removed, "tokens": swept})  # noqa: T201 - the command's output
        finally:
            await container.aclose()
            await database.dispose()

    asyncio.run(round_())


def serve(host: str | None, port: int | None, reload: bool, workers: int) -> None:
    import uvicorn

    settings = get_settings()
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pixforge", description="Pixforge backend")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the API with uvicorn")
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)
    serve_parser.add_argument("--reload", action="store_true")
    serve_parser.add_argument("--workers", type=int, default=1)
    migrate_parser = commands.add_parser("migrate", help="apply database migrations (alembic upgrade)")
    migrate_parser.add_argument("revision", nargs="?", default="head")
    commands.add_parser("sweep", help="delete images past their retention, expired tokens; recover jobs")

    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.reload, args.workers)
    elif args.command == "migrate":
        migrate(args.revision)
    elif args.command == "sweep":
        sweep()


if __name__ == "__main__":
    main(sys.argv[1:])

"""The application factory: settings, logging, database, collaborators, middlewares, errors, routers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from app.config import Environment, Settings, get_settings
from app.container import Container
from app.db.session import Database
from app.errors import install_error_handlers
from app.logging import configure_logging
from app.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from app.routers import api_router, root_router
from app.services import catalogue
from app.tasks import maintenance

log = structlog.get_logger("app.main")


def create_app(
    settings: Settings | None = None, database: Database | None = None, container: Container | None = None
) -> FastAPI:
    """`database`/`container` given by the caller stay the caller's to close (tests share them)."""
    settings = settings or get_settings()
    configure_logging(settings)
    owns_database = database is None
    database = database or Database.from_settings(settings)
    owns_container = container is None
    container = container or Container.build(settings, database)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("app.startup", environment=settings.environment.value)
        if settings.usd_price_overrides:
            async with database.session_scope() as session:
                await catalogue.apply_usd_price_settings(session, settings.usd_price_overrides)
        # Jobs a previous process left behind run again (or are failed and refunded) first thing.
        await maintenance.recover_jobs(container)
        housekeeping = asyncio.create_task(
            maintenance.run_forever(container, settings.maintenance_interval_seconds), name="maintenance"
        )
        yield
        housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await housekeeping
        if owns_container:
            await container.aclose()
        if owns_database:
            await database.dispose()
        log.info("app.shutdown")

    app = FastAPI(
        title=settings.app_name,
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.container = container

    install_error_handlers(app)
    # Added innermost first: CORS wraps the request context so even a last-resort 500 carries the
    # CORS headers a browser needs to read it.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(
        RequestContextMiddleware,
        hsts=settings.environment is Environment.production,
        metrics=container.metrics if settings.metrics_enabled else None,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "X-CSRF-Token"],
        expose_headers=["X-Request-ID", "Retry-After", "Idempotent-Replayed"],
        max_age=600,
    )

    app.include_router(root_router)
    app.include_router(api_router)
    return app

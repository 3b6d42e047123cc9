"""The application factory: settings, logging, database, collaborators, middlewares, errors, routers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.middleware.cors import CORSMiddleware

from app.admission import AdmissionGate
from app.config import Environment, Settings, get_settings
from app.container import Container
from app.db.session import Database
from app.errors import install_error_handlers
from app.integrations.error_tracking import init_error_tracking
from app.logging import configure_logging
from app.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from app.routers import mounted_routes
from app.routers.compat._hairtryon_session import install_hairtryon_errors
from app.routers.dispatch import index_routes
from app.schemas.auth import LoginIn
from app.schemas.errors import DESCRIPTIONS, ErrorOut, HairTryOnErrorOut, ValidationErrorOut
from app.schemas.images import VectorizeIn
from app.services import backups, catalogue
from app.tasks import maintenance, recovery

log = structlog.get_logger("app.main")

# Bodies that routes parse themselves (each takes JSON or a form, which FastAPI cannot declare) and
# reference from `openapi_extra`: their schemas (and those they use) join the document's components.
SELF_PARSED_BODIES: tuple[type[BaseModel], ...] = (LoginIn, VectorizeIn)


# The cyclic garbage collector, set for a server process (measured with bench.hot_path at 64 clients: 30%
# more requests a second, a third less CPU per request, p99 from 200 ms to 80 ms):
# - what start-up built (modules, routes, validators: some 300,000 objects) lives as long as the process:
#   frozen, so that a full collection no longer walks it (130 ms each, several a second under load);
# - a young collection every 20,000 net allocations, not 700: a request's objects mostly die before one
#   runs, instead of being promoted to the older generations because their request was still in flight.
SERVING_THRESHOLDS = (20_000, 20, 100)


@contextlib.contextmanager
def collector_for_serving() -> Iterator[None]:
    """The collector as above while the app serves; as it was before, after (tests start many apps)."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


# The routes that start image work: admitted ahead of the other waiting requests (a crowd of cheap reads
# does not hold up the paid work), which run at most MAX_ACTIVE_BESIDE_IMAGE_WORK at once beside them
# (app/admission.py).
IMAGE_WORK_PATHS = frozenset(
    {
        "/api/v1/images/remove-background",
        "/api/v1/images/vectorize",
        "/compat/purepic/api/v1/images/remove-background",
    }
)
VECTORIZE_PATHS = frozenset({"/api/v1/images/vectorize"})


def image_work_paths(settings: Settings, container: Container) -> frozenset[str]:
    """The image routes whose work runs in this process's own workers: none when a job queue's workers
    run the jobs, and no cut-outs when a hosted provider makes them (the request only waits)."""
    if not settings.admission_image_work_first or container.job_queue is not None:
        return frozenset()
    if container.removes_backgrounds_here:
        return IMAGE_WORK_PATHS
    return VECTORIZE_PATHS


def create_app(
    settings: Settings | None = None, database: Database | None = None, container: Container | None = None
) -> FastAPI:
    """`database`/`container` given by the caller stay the caller's to close (tests share them)."""
    settings = settings or get_settings()
    configure_logging(settings)
    init_error_tracking(settings)
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
        await recovery.recover_jobs(container)
        await container.warm_up()
        housekeeping = asyncio.create_task(
            maintenance.run_forever(container, settings.maintenance_interval_seconds), name="maintenance"
        )
        background = [housekeeping]
        if settings.backup_schedule_enabled:
            background.append(
                asyncio.create_task(
                    backups.run_forever(settings, settings.maintenance_interval_seconds), name="backups"
                )
            )
        with collector_for_serving():
            yield
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        text_model = getattr(app.state, "text_model", None)
        if text_model is not None:
            await text_model.aclose()
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
    install_hairtryon_errors(app)
    # Added innermost first: CORS wraps the request context so even a last-resort 500 carries the
    # CORS headers a browser needs to read it.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(
        AdmissionGate,
        max_active=settings.max_active_requests,
        max_queued=settings.max_queued_requests,
        lease_seconds=settings.admission_lease_seconds,
        first_paths=image_work_paths(settings, container),
        max_beside_first=settings.max_active_beside_image_work or None,
    )
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

    # Shared with every other app of this process; so `app.dependency_overrides` has no effect.
    app.router.routes.extend(mounted_routes())
    index_routes(app)
    _complete_document(app, SELF_PARSED_BODIES)
    return app


_SCHEMAS = "#/components/schemas/{model}"
# What every route answers by construction, added to each operation the document lists unless the route
# declares its own: a body is read behind the body-size limit (413) and parsed by one handler (400 not JSON
# or not a form); a route that declares a security scheme refuses a missing or dead credential (401) and,
# for a write authenticated by the session cookie, a missing CSRF echo or a foreign Origin (403).
_BODY_STATUSES = (400, 413)
_SECURED_STATUSES = (401,)
_SECURED_WRITE_STATUSES = (401, 403)
_SAFE_METHODS = frozenset({"get", "head", "options"})


def _complete_document(app: FastAPI, models: tuple[type[BaseModel], ...]) -> None:
    """The document FastAPI generates, completed once: the bodies routes parse themselves (`models`), and
    the house error shapes where FastAPI would declare its own 422 body or none at all."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # cached by FastAPI as app.openapi_schema, completed here once
        _, definitions = models_json_schema(
            [(model, "validation") for model in models], ref_template=_SCHEMAS
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in definitions.get("$defs", {}).items():
            if schemas.setdefault(name, schema) != schema:
                raise RuntimeError(f"Two different request schemas are named {name}")
        if "ValidationErrorOut" not in schemas:  # (FastAPI added them if a route declares them)
            _, definitions = models_json_schema(
                [(ErrorOut, "serialization"), (ValidationErrorOut, "serialization")], ref_template=_SCHEMAS
            )
            for name, schema in definitions.get("$defs", {}).items():
                schemas.setdefault(name, schema)
        for operations in document.get("paths", {}).values():
            for method, operation in operations.items():
                if isinstance(operation, dict) and "responses" in operation:
                    _declare_house_errors(method, operation)
        for name in ("HTTPValidationError", "ValidationError"):
            if f'"#/components/schemas/{name}"' not in json.dumps(document):
                schemas.pop(name, None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _error_response(status: int) -> dict[str, Any]:
    model = ValidationErrorOut if status == 422 else ErrorOut
    return {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": _SCHEMAS.format(model=model.__name__)}}},
    }


_ERROR_MODELS = frozenset(
    _SCHEMAS.format(model=model.__name__) for model in (ErrorOut, ValidationErrorOut, HairTryOnErrorOut)
)


def _declare_house_errors(method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    for status, response in responses.items():
        # FastAPI files a declared error under the route's own media type (text/plain, a redirect, a
        # PDF): an error body is JSON whatever the success answer is.
        content = response.get("content", {})
        if status[0] in "45" and len(content) == 1 and "application/json" not in content:
            (media,) = content.values()
            if media.get("schema", {}).get("$ref") in _ERROR_MODELS:
                response["content"] = {"application/json": media}
    framework_422 = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema")
    if framework_422 == {"$ref": _SCHEMAS.format(model="HTTPValidationError")}:
        responses["422"] = _error_response(422)
    statuses = (*(_BODY_STATUSES if "requestBody" in operation else ()),)
    if operation.get("security"):
        statuses += _SECURED_STATUSES if method in _SAFE_METHODS else _SECURED_WRITE_STATUSES
    for status in statuses:
        responses.setdefault(str(status), _error_response(status))

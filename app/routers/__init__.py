"""Every router of the API, mounted by app.main."""

from functools import cache

from fastapi import APIRouter
from starlette.routing import BaseRoute

from app.routers import (
    admin,
    api_keys,
    auth,
    billing,
    clones,
    credits,
    design,
    files,
    generations,
    health,
    images,
    usage,
    users,
    webhooks,
)
from app.routers.compat import compat_router
from app.schemas.errors import error_responses

API_PREFIX = "/api/v1"
# Any route that reads the database may find it down or saturated: 503 `database_unavailable`.
EVERY_API_ROUTE_RESPONSES = error_responses(503)
# Mounted on the application itself, not through one "/api/v1" router: FastAPI matches a request
# through every level of included routers again on the way down, so one level fewer, and the routers
# every client calls all the time first (their own credits, the gallery), is the cheapest route lookup.
API_ROUTERS: tuple[APIRouter, ...] = (
    users.router,
    credits.router,
    images.router,
    auth.router,
    api_keys.router,
    billing.router,
    files.router,
    webhooks.router,
    admin.router,
    design.router,
    usage.router,
    clones.router,
    generations.router,
)

root_router = APIRouter()
root_router.include_router(health.router)


@cache
def mounted_routes() -> tuple[BaseRoute, ...]:
    """Every route of the application, composed once per process: the probes, the API under its prefix
    and the compatibility routes, each answering `responses` too (what any route that reads the database
    may answer). FastAPI builds an included router's routes (their dependencies, their validation
    models) the first time a request walks through it, and keeps them on that inclusion; an application
    that mounts these same inclusions does not build them again (a worker process that makes several
    apps, a test suite that makes one per test)."""
    composed = APIRouter()
    composed.include_router(root_router)
    for router in API_ROUTERS:
        composed.include_router(router, prefix=API_PREFIX, responses=EVERY_API_ROUTE_RESPONSES)
    composed.include_router(compat_router, responses=EVERY_API_ROUTE_RESPONSES)
    return tuple(composed.routes)

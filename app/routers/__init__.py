"""Every router of the API, mounted by app.main."""

from fastapi import APIRouter

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

API_PREFIX = "/api/v1"
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

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

api_router = APIRouter(prefix="/api/v1")
for module in (auth, users, api_keys, credits, billing, images, files, webhooks, admin, design, usage):
    api_router.include_router(module.router)
api_router.include_router(clones.router)
api_router.include_router(generations.router)

root_router = APIRouter()
root_router.include_router(health.router)

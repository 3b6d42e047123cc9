"""Every router of the API, mounted by app.main."""

from fastapi import APIRouter

from app.routers import admin, api_keys, auth, billing, credits, files, health, images, users, webhooks

api_router = APIRouter(prefix="/api/v1")
for module in (auth, users, api_keys, credits, billing, images, files, webhooks, admin):
    api_router.include_router(module.router)

root_router = APIRouter()
root_router.include_router(health.router)

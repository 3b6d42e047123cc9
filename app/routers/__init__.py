"""Every router of the API, mounted by app.main."""

from fastapi import APIRouter

from app.routers import health

api_router = APIRouter(prefix="/api/v1")

root_router = APIRouter()
root_router.include_router(health.router)

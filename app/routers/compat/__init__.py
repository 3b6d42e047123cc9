"""Routers that speak the contracts of the two existing frontends (Pure Pic, Hair Try-On) on top of the
native services, so those clients run unchanged with only their API base URL pointed here."""

from fastapi import APIRouter

from app.routers.compat import hairtryon, hairtryon_media, purepic

compat_router = APIRouter(prefix="/compat")
compat_router.include_router(purepic.router)
compat_router.include_router(hairtryon.router)
compat_router.include_router(hairtryon_media.router)

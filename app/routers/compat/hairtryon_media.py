"""The Hair Try-On SPA's image, upload and payment routes."""

from fastapi import APIRouter

from app.routers.compat._hairtryon_session import HAIRTRYON_PREFIX

router = APIRouter(prefix=HAIRTRYON_PREFIX, tags=["compat: Hair Try-On"])

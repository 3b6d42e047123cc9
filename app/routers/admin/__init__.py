"""Every route under /api/v1/admin/, in this one package.

The admin dependency sits on the package's router, so a route added to any module here is refused to
anonymous callers (401) and to non-admins (403) without having to ask for it
(tests/routers/admin/test_access.py walks the app to prove it)."""

from fastapi import APIRouter, Depends

from app.dependencies import get_admin
from app.routers.admin import analytics, audit, credits, plans, reports, styles, users, webhooks
from app.schemas.errors import error_responses

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(get_admin)],
    responses=error_responses(403),
)
for module in (analytics, audit, credits, plans, reports, styles, users, webhooks):
    router.include_router(module.router)

"""CRUD of the hairstyle catalogue: /admin/styles (GET /styles shows the active ones to everybody)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from app.dependencies import AdminUser, SessionDep
from app.schemas.admin import StyleAdminOut, StyleCreateIn, StyleUpdateIn
from app.schemas.errors import error_responses
from app.services import admin as admin_service

router = APIRouter()


@router.get("/styles", response_model=list[StyleAdminOut])
async def list_styles(session: SessionDep) -> list[StyleAdminOut]:
    """Every style, retired ones included, in catalogue order."""
    return [StyleAdminOut.model_validate(style) for style in await admin_service.list_styles(session)]


@router.post("/styles", status_code=201, response_model=StyleAdminOut, responses=error_responses(409))
async def create_style(body: StyleCreateIn, admin: AdminUser, session: SessionDep) -> StyleAdminOut:
    """409 `style_name_taken` when the name is in use."""
    style = await admin_service.create_style(session, admin, body.model_dump())
    return StyleAdminOut.model_validate(style)


@router.patch("/styles/{style_id}", response_model=StyleAdminOut, responses=error_responses(404))
async def update_style(
    style_id: uuid.UUID, body: StyleUpdateIn, admin: AdminUser, session: SessionDep
) -> StyleAdminOut:
    """Change the fields sent; `is_active: false` retires a style from GET /styles."""
    changes = body.model_dump(exclude_unset=True)
    style = await admin_service.update_style(session, admin, style_id, changes)
    return StyleAdminOut.model_validate(style)


@router.delete("/styles/{style_id}", status_code=204, responses=error_responses(404))
async def delete_style(style_id: uuid.UUID, admin: AdminUser, session: SessionDep) -> Response:
    await admin_service.delete_style(session, admin, style_id)
    return Response(status_code=204)

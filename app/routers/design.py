from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from app.dependencies import (
    AdminUser,
    CallerDep,
    ContainerDep,
    CurrentUser,
    SessionDep,
    SettingsDep,
    TextModelDep,
)
from app.models import DesignSystem
from app.schemas.design import (
    DesignSystemIn,
    DesignSystemOut,
    DesignSystemPageOut,
    DesignSystemUpdateIn,
    GeneratedOut,
    GenerateIn,
    OwnerOut,
    PaletteChargeOut,
    PaletteIn,
    PaletteOut,
    ShadowLayerOut,
    TypographyOut,
)
from app.schemas.errors import error_responses
from app.schemas.palette_answer import pair_out, palette_answer, palette_json
from app.services.credits import to_credits
from app.services.design import exports, palettes, systems
from app.services.design.exports import ExportFormat

router = APIRouter(tags=["design"])

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=200)]
TagQuery = Annotated[
    str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$", description="Only this tag.")
]


@router.post("/palettes", response_model=PaletteOut, responses=error_responses(404))
async def create_palette(
    body: PaletteIn, caller: CallerDep, container: ContainerDep, model: TextModelDep
) -> Response:
    """A palette from a colour (OKLCH harmonies), one of your uploads (its dominant colours) or a brief
    (through the configured LLM). Charged PALETTE_COST_CREDITS, only on success."""
    request = palettes.PaletteRequest(body.base_color, body.upload_id, body.prompt, body.mode)
    paid = await palettes.create(container, model, caller.user_id, request, palette_json)
    charge = PaletteChargeOut(
        id=paid.id, credits_charged=to_credits(paid.credits_charged), credits=to_credits(paid.balance)
    )
    return Response(palette_answer(charge, paid.rendered), media_type="application/json")


@router.post(
    "/design-systems/generate",
    response_model=GeneratedOut,
    status_code=201,
    responses=error_responses(402, 404, 503),
)
async def generate_design_system(
    body: GenerateIn, user: CurrentUser, session: SessionDep, container: ContainerDep, model: TextModelDep
) -> GeneratedOut:
    """A whole design system (palette as tokens; with tier `full` also type, spacing, radii, shadows)
    from a colour or an upload, enriched by the LLM when `brand_description` is given; saved as yours
    (private). Charged by tier, only on success."""
    request = systems.GenerateRequest(
        body.brand_description, body.base_color, body.upload_id, body.tier, body.mode, body.name
    )
    generated = await systems.generate(session, container, model, user, request)
    return GeneratedOut(
        design_system=system_out(generated.view),
        pairs=[pair_out(pair) for pair in generated.palette.pairs],
        repairs=generated.palette.repairs,
        credits_charged=to_credits(generated.credits_charged),
        credits=to_credits(generated.balance),
    )


@router.get("/design-systems", response_model=DesignSystemPageOut, responses=error_responses(400))
async def list_design_systems(
    user: CurrentUser, session: SessionDep, limit: Limit = 20, cursor: Cursor = None, tag: TagQuery = None
) -> DesignSystemPageOut:
    """Your design systems, newest first."""
    page = await systems.list_own(session, user, limit, cursor, tag.lower() if tag else None)
    return DesignSystemPageOut(items=[system_out(view) for view in page.items], next_cursor=page.next_cursor)


@router.post("/design-systems", response_model=DesignSystemOut, status_code=201)
async def create_design_system(
    body: DesignSystemIn, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> DesignSystemOut:
    """Save a design system you wrote (free)."""
    return system_out(await systems.create(session, container, user, body.model_dump(mode="json")))


@router.get("/design-systems/public", response_model=DesignSystemPageOut, responses=error_responses(400))
async def showcase(
    session: SessionDep, limit: Limit = 20, cursor: Cursor = None, tag: TagQuery = None
) -> DesignSystemPageOut:
    """The showcase: shared design systems, featured first, then the most recently shared. Open to
    anyone; each shows its maker's display name only."""
    page = await systems.showcase(session, limit, cursor, tag.lower() if tag else None)
    return DesignSystemPageOut(items=[system_out(view) for view in page.items], next_cursor=page.next_cursor)


@router.get("/design-systems/{system_id}", response_model=DesignSystemOut, responses=error_responses(404))
async def get_design_system(system_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> DesignSystemOut:
    """One of yours, or a shared one."""
    return system_out(await systems.get(session, user, system_id))


@router.patch("/design-systems/{system_id}", response_model=DesignSystemOut, responses=error_responses(404))
async def update_design_system(
    system_id: uuid.UUID, body: DesignSystemUpdateIn, user: CurrentUser, session: SessionDep
) -> DesignSystemOut:
    """Edit one of yours; `version` grows by one when anything changed."""
    changes = body.model_dump(mode="json", exclude_unset=True, exclude={"version"})
    return system_out(await systems.update(session, user, system_id, changes, body.version))


@router.delete("/design-systems/{system_id}", status_code=204, responses=error_responses(404))
async def delete_design_system(system_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    await systems.delete(session, user, system_id)
    return Response(status_code=204)


@router.post(
    "/design-systems/{system_id}/share", response_model=DesignSystemOut, responses=error_responses(404)
)
async def share_design_system(
    system_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> DesignSystemOut:
    """Show one of yours in the showcase (with your username, or your name, as its maker)."""
    return system_out(await systems.share(session, user, system_id, public=True))


@router.delete(
    "/design-systems/{system_id}/share", response_model=DesignSystemOut, responses=error_responses(404)
)
async def unshare_design_system(
    system_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> DesignSystemOut:
    return system_out(await systems.share(session, user, system_id, public=False))


@router.put(
    "/design-systems/{system_id}/featured",
    response_model=DesignSystemOut,
    responses=error_responses(403, 404),
)
async def feature_design_system(
    system_id: uuid.UUID, admin: AdminUser, session: SessionDep
) -> DesignSystemOut:
    """Administrators: put a shared system at the top of the showcase."""
    return system_out(await systems.set_featured(session, system_id, featured=True))


@router.delete(
    "/design-systems/{system_id}/featured",
    response_model=DesignSystemOut,
    responses=error_responses(403, 404),
)
async def unfeature_design_system(
    system_id: uuid.UUID, admin: AdminUser, session: SessionDep
) -> DesignSystemOut:
    return system_out(await systems.set_featured(session, system_id, featured=False))


@router.get(
    "/design-systems/{system_id}/export",
    response_class=Response,
    responses={
        **error_responses(404),
        200: {"content": {"application/design-tokens+json": {}, "text/css": {}}},
    },
)
async def export_design_system(
    system_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    format: Annotated[ExportFormat, Query(description="json is W3C Design Tokens 2025.10.")] = "json",
) -> Response:
    """One of yours or a shared one, as a file. Formats in DESIGN_EXPORT_PRO_FORMATS need a plan in
    DESIGN_PRO_PLANS (403 plan_required)."""
    exported = await exports.export(session, settings, user, system_id, format)
    return Response(
        exported.body,
        media_type=exported.content_type,
        headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'},
    )


# --- shapes ----------------------------------------------------------------------------------------


def system_out(view: systems.SystemView) -> DesignSystemOut:
    system: DesignSystem = view.system
    typography: dict[str, Any] = system.typography or {}
    return DesignSystemOut(
        id=system.id,
        name=system.name,
        description=system.description,
        source=system.source,
        colors=system.colors,
        typography=TypographyOut(**typography),
        spacing=system.spacing,
        radii=system.radii,
        shadows={
            name: [ShadowLayerOut(**layer) for layer in layers] for name, layers in system.shadows.items()
        },
        tags=view.tags,
        version=system.version,
        is_public=system.is_public,
        featured=system.featured,
        shared_at=system.shared_at,
        created_at=system.created_at,
        updated_at=system.updated_at,
        is_owner=view.is_owner,
        owner=OwnerOut(display_name=view.owner_display_name) if view.owner_display_name else None,
    )

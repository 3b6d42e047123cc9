"""Design systems: generated (paid) or written by hand, kept by their owner, shared in the showcase.

Owner only: another user's system is 404, unless it is shared, when anyone may read and export it (never
edit it). The showcase lists shared systems of open accounts, featured first, with the owner's display
name and nothing else about them."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.errors import ProviderNotConfigured
from app.integrations.llm import TextModel
from app.models import DesignSource, DesignSystem, UsageAction, User
from app.repositories.design import DesignSystemRepository, ShowcaseCursor, ShowcaseRow
from app.services.credits import to_millicredits
from app.services.design import colors, palettes, prompting, spend, tokens
from app.services.design.colors import Harmony
from app.services.design.dominant import DominantColor, ImageMode
from app.services.design.errors import (
    DesignSystemLimit,
    DesignSystemNotFound,
    TokenNameCollision,
    UnreadableImage,
    VersionConflict,
)
from app.services.design.prompting import BrandIdea
from app.services.pagination import InvalidCursor, decode_cursor, encode_cursor

CONTENT_FIELDS = ("colors", "typography", "spacing", "radii", "shadows")
ANONYMOUS = "Anonymous designer"


@dataclass(frozen=True)
class SystemView:
    system: DesignSystem
    tags: list[str]
    is_owner: bool
    # Shown for a shared system: the owner's username, else their name, else ANONYMOUS.
    owner_display_name: str | None


@dataclass(frozen=True)
class SystemPage:
    items: list[SystemView]
    next_cursor: str | None


@dataclass(frozen=True)
class GenerateRequest:
    brand_description: str | None = None
    base_color: str | None = None
    upload_id: uuid.UUID | None = None
    tier: tokens.Tier = "full"
    mode: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Generated:
    view: SystemView
    palette: palettes.Palette
    credits_charged: int
    balance: int


def price_of(ctx: Container, tier: tokens.Tier) -> tuple[UsageAction, int]:
    settings = ctx.settings
    if tier == "colors":
        return UsageAction.design_system_colors, to_millicredits(settings.design_system_colors_cost_credits)
    return UsageAction.design_system_full, to_millicredits(settings.design_system_full_cost_credits)


async def generate(
    session: AsyncSession, ctx: Container, model: TextModel | None, user: User, request: GenerateRequest
) -> Generated:
    """A whole system from a colour, an image or a description (the LLM enriches any of them when a
    description is given), saved as the user's (private) and charged by tier on success only."""
    action, price = price_of(ctx, request.tier)
    if request.brand_description is not None and model is None:
        raise ProviderNotConfigured("No language model is configured (OPENAI_API_KEY or ANTHROPIC_API_KEY).")
    await _check_room(session, ctx, user)
    await spend.require_balance(session, user.id, price)

    source = DesignSource.prompt
    fixed: tuple[str, str, str] | None = None
    dominant: list[DominantColor] = []
    harmony_mode = cast(
        Harmony, request.mode if request.upload_id is None and request.mode else "complementary"
    )
    mode_name: str = harmony_mode
    if request.base_color is not None:
        source = DesignSource.color
        secondary, accent = await asyncio.to_thread(colors.harmony, request.base_color, harmony_mode)
        fixed = (request.base_color, secondary, accent)
    elif request.upload_id is not None:
        source = DesignSource.image
        image_mode = cast(ImageMode, request.mode or "median_cut")
        mode_name = image_mode
        dominant = await palettes.upload_colors(session, ctx, user.id, request.upload_id, image_mode)
        fixed = palettes.roles_from_dominant(dominant)
        if fixed is None:
            raise UnreadableImage("The image has no opaque pixels to take colours from.")

    idea: BrandIdea | None = None
    if request.brand_description is not None and model is not None:
        brief, llm, primary = request.brand_description, model, fixed[0] if fixed else None
        idea = await spend.ask_llm(
            session, user.id, action, lambda: prompting.ask_system(llm, brief, primary)
        )

    palette = await asyncio.to_thread(_palette, fixed, idea, source, harmony_mode, mode_name, dominant)
    content = tokens.system_content(
        palette,
        request.tier,
        pairing=idea.font_pairing if idea else None,
        scale=(idea.type_scale if idea else None) or "balanced",
        corners=(idea.corner_style if idea else None) or "soft",
    )
    system = DesignSystem(
        id=uuid.uuid4(),
        user_id=user.id,
        name=request.name or (idea.name if idea else None) or _default_name(source, palette),
        description=idea.description if idea else None,
        source=source.value,
        version=1,
        **content,
    )
    repository = DesignSystemRepository(session)
    await repository.add(system)
    tags = idea.tags if idea else []
    await repository.replace_tags(system.id, tags)
    balance = await spend.charge(session, user.id, action, price, system.id)
    return Generated(SystemView(system, sorted(set(tags)), True, None), palette, price, balance)


def _palette(
    fixed: tuple[str, str, str] | None,
    idea: BrandIdea | None,
    source: DesignSource,
    harmony_mode: Harmony,
    mode_name: str,
    dominant: list[DominantColor],
) -> palettes.Palette:
    if fixed is None:
        assert idea is not None  # a description without a colour: the model's primary is required
        return palettes.from_idea(idea, harmony_mode, source)
    primary, secondary, accent = fixed
    if idea is not None and source is DesignSource.color:
        # The user's colour stays; the model's partners for it are taken when they are colours.
        secondary, accent = idea.secondary or secondary, idea.accent or accent
    return palettes.build(
        primary,
        secondary,
        accent,
        source=source,
        mode=mode_name,
        dominant=dominant,
        name=idea.name if idea else None,
        rationale=idea.description if idea else None,
        repairs=idea.repairs if idea else None,
    )


def _default_name(source: DesignSource, palette: palettes.Palette) -> str:
    origin = {DesignSource.color: "Colour", DesignSource.image: "Image"}.get(source, "Brand")
    return f"{origin} system {palette.roles['primary']}"


# --- CRUD ------------------------------------------------------------------------------------------


async def create(session: AsyncSession, ctx: Container, user: User, fields: Mapping[str, Any]) -> SystemView:
    """A system written by hand. `fields`: name, description, tags and the token documents, already
    validated for shape (app/schemas/design.py)."""
    await _check_room(session, ctx, user)
    content = {name: dict(fields.get(name) or {}) for name in CONTENT_FIELDS}
    _check_names(content)
    system = DesignSystem(
        id=uuid.uuid4(),
        user_id=user.id,
        name=fields["name"],
        description=fields.get("description"),
        source=DesignSource.manual.value,
        version=1,
        **content,
    )
    repository = DesignSystemRepository(session)
    await repository.add(system)
    tags = list(fields.get("tags") or [])
    await repository.replace_tags(system.id, tags)
    return SystemView(system, sorted(set(tags)), True, None)


async def get(session: AsyncSession, user: User | None, system_id: uuid.UUID) -> SystemView:
    """The user's own system, or anyone's shared one."""
    repository = DesignSystemRepository(session)
    if user is not None:
        owned = await repository.get_owned(system_id, user.id)
        if owned is not None:
            return await _view(repository, owned, is_owner=True)
    row = await repository.get_public(system_id)
    if row is None:
        raise DesignSystemNotFound()
    return await _public_view(repository, row)


async def list_own(
    session: AsyncSession, user: User, limit: int, cursor: str | None, tag: str | None
) -> SystemPage:
    repository = DesignSystemRepository(session)
    before = decode_cursor(cursor) if cursor else None
    systems = await repository.page_for_user(user.id, limit + 1, before, tag)
    more = len(systems) > limit
    systems = systems[:limit]
    tags = await repository.tags_for([system.id for system in systems])
    last = systems[-1] if more else None
    return SystemPage(
        [SystemView(system, tags.get(system.id, []), True, None) for system in systems],
        encode_cursor(last.created_at, last.id) if last else None,
    )


async def update(
    session: AsyncSession,
    user: User,
    system_id: uuid.UUID,
    changes: Mapping[str, Any],
    expected_version: int | None,
) -> SystemView:
    """Edit the owner's system: `changes` holds only the fields sent. Any change of content adds one
    to `version`; `expected_version` (when sent) must be the current one (409 otherwise)."""
    repository = DesignSystemRepository(session)
    system = await repository.get_owned(system_id, user.id, for_update=True)
    if system is None:
        raise DesignSystemNotFound()
    if expected_version is not None and expected_version != system.version:
        raise VersionConflict(
            f"The system is at version {system.version}, not {expected_version}: reload it and edit again.",
            extra={"version": system.version},
        )
    content = {name: changes[name] if name in changes else getattr(system, name) for name in CONTENT_FIELDS}
    _check_names(content)
    edited = False
    for name in (*CONTENT_FIELDS, "name", "description"):
        if name in changes and changes[name] != getattr(system, name):
            setattr(system, name, dict(changes[name]) if name in CONTENT_FIELDS else changes[name])
            edited = True
    current_tags = (await repository.tags_for([system.id]))[system.id]
    tags = sorted(set(changes["tags"])) if "tags" in changes else current_tags
    if tags != current_tags:
        await repository.replace_tags(system.id, tags)
        edited = True
    if edited:
        system.version += 1
        system.updated_at = utcnow()
        await session.flush()
    return SystemView(system, tags, True, None)


async def delete(session: AsyncSession, user: User, system_id: uuid.UUID) -> None:
    repository = DesignSystemRepository(session)
    system = await repository.get_owned(system_id, user.id, for_update=True)
    if system is None:
        raise DesignSystemNotFound()
    await repository.delete(system)


async def share(session: AsyncSession, user: User, system_id: uuid.UUID, public: bool) -> SystemView:
    """Show the owner's system in the showcase, or take it out. Sharing again keeps its place."""
    repository = DesignSystemRepository(session)
    system = await repository.get_owned(system_id, user.id, for_update=True)
    if system is None:
        raise DesignSystemNotFound()
    if public and not system.is_public:
        system.is_public, system.shared_at = True, utcnow()
    elif not public and system.is_public:
        system.is_public, system.shared_at = False, None
    await session.flush()
    return await _view(repository, system, is_owner=True)


async def set_featured(session: AsyncSession, system_id: uuid.UUID, featured: bool) -> SystemView:
    """Administrators: feature a shared system at the top of the showcase (or stop)."""
    repository = DesignSystemRepository(session)
    row = await repository.get_public(system_id)
    if row is None:
        raise DesignSystemNotFound("No such shared design system.")
    row.system.featured = featured
    await session.flush()
    return await _public_view(repository, row)


async def showcase(session: AsyncSession, limit: int, cursor: str | None, tag: str | None) -> SystemPage:
    repository = DesignSystemRepository(session)
    rows = await repository.showcase_page(limit + 1, _decode_showcase(cursor) if cursor else None, tag)
    more = len(rows) > limit
    rows = rows[:limit]
    tags = await repository.tags_for([row.system.id for row in rows])
    items = [SystemView(row.system, tags.get(row.system.id, []), False, _display_name(row)) for row in rows]
    last = rows[-1].system if more else None
    return SystemPage(items, _encode_showcase(last) if last else None)


# --- helpers ---------------------------------------------------------------------------------------


async def _check_room(session: AsyncSession, ctx: Container, user: User) -> None:
    limit = ctx.settings.design_systems_max_per_user
    if await DesignSystemRepository(session).count_for_user(user.id) >= limit:
        raise DesignSystemLimit(
            f"You have {limit} design systems, the most one account keeps; delete one first."
        )


def _check_names(content: Mapping[str, Any]) -> None:
    clashes = tokens.colliding_names(content)
    if clashes:
        raise TokenNameCollision(
            "Two tokens would export under the same name: " + ", ".join(sorted(set(clashes))[:5]) + ".",
            extra={"names": sorted(set(clashes))},
        )


async def _view(repository: DesignSystemRepository, system: DesignSystem, *, is_owner: bool) -> SystemView:
    tags = (await repository.tags_for([system.id]))[system.id]
    return SystemView(system, tags, is_owner, None)


async def _public_view(repository: DesignSystemRepository, row: ShowcaseRow) -> SystemView:
    tags = (await repository.tags_for([row.system.id]))[row.system.id]
    return SystemView(row.system, tags, False, _display_name(row))


def _display_name(row: ShowcaseRow) -> str:
    return row.owner_username or row.owner_name or ANONYMOUS


def _encode_showcase(system: DesignSystem) -> str:
    assert system.shared_at is not None
    raw = json.dumps([system.featured, system.shared_at.isoformat(), str(system.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_showcase(cursor: str) -> ShowcaseCursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        featured, shared_at, system_id = json.loads(raw)
        if not isinstance(featured, bool) or not isinstance(shared_at, str) or not isinstance(system_id, str):
            raise ValueError("cursor fields")
        moment = datetime.fromisoformat(shared_at)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return ShowcaseCursor(featured, moment.astimezone(UTC), uuid.UUID(system_id))
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise InvalidCursor() from exc

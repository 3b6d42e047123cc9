"""Palettes: primary, secondary and accent, a neutral ramp 50..950, semantic colours, and the text /
background pairs to use them with, every one of which passes WCAG 2.1 AA (repaired if it did not)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.errors import NotFound, ProviderNotConfigured
from app.integrations.llm import TextModel
from app.integrations.storage import ObjectNotFound
from app.models import DesignSource, UsageAction
from app.services import uploads
from app.services.credits import to_millicredits
from app.services.design import colors, prompting, spend
from app.services.design import dominant as dominant_module
from app.services.design.colors import AA, AAA, Harmony, Oklch
from app.services.design.dominant import DominantColor, ImageMode, dominant_colors
from app.services.design.errors import UnreadableImage
from app.services.design.prompting import BrandIdea

Rendered = TypeVar("Rendered")


@dataclass(frozen=True)
class ColorInfo:
    """A colour with what a designer checks: OKLCH, its contrast with white and black, the text colour
    to put on it."""

    hex: str
    oklch: Oklch
    contrast_white: float
    contrast_black: float
    text_color: str

    @classmethod
    def of(cls, hex_color: str) -> ColorInfo:
        on_white = colors.contrast(hex_color, colors.WHITE)
        on_black = colors.contrast(hex_color, colors.BLACK)
        return cls(
            hex=hex_color,
            oklch=colors.oklch(hex_color),
            contrast_white=on_white,
            contrast_black=on_black,
            text_color=colors.text_for(on_white, on_black),
        )


@dataclass(frozen=True)
class Pair:
    """A recommended foreground on a background; `repaired` when the foreground was moved in lightness
    to reach AA."""

    name: str
    foreground: str
    background: str
    ratio: float
    repaired: bool

    @property
    def level(self) -> str:
        return "AAA" if self.ratio >= AAA else "AA"


@dataclass(frozen=True)
class Palette:
    source: DesignSource
    mode: str
    roles: dict[str, str]  # primary, secondary, accent
    semantic: dict[str, str]
    neutral: dict[str, str]  # 50..950
    pairs: list[Pair]
    dominant: list[DominantColor] = field(default_factory=list)
    name: str | None = None
    rationale: str | None = None
    # What was fixed in the input (a model's colours that were not colours, contrast repairs).
    repairs: list[str] = field(default_factory=list)
    # Each colour of roles, semantic and neutral, analysed: filled by `analysed` for the palette's own
    # answer (a design system does not show them).
    infos: dict[str, ColorInfo] = field(default_factory=dict)


def build(
    primary: str,
    secondary: str,
    accent: str,
    *,
    source: DesignSource,
    mode: str,
    dominant: list[DominantColor] | None = None,
    name: str | None = None,
    rationale: str | None = None,
    repairs: list[str] | None = None,
) -> Palette:
    neutral = colors.ramp(primary, neutral=True)
    semantic = colors.semantic_colors()
    roles = {"primary": primary, "secondary": secondary, "accent": accent}
    pairs = [
        _pair("body_text", neutral["900"], neutral["50"]),
        _pair("muted_text", neutral["600"], neutral["50"]),
        _pair("text_on_white", neutral["900"], colors.WHITE),
        _pair("text_on_dark", neutral["50"], neutral["950"]),
        _pair("link_on_white", primary, colors.WHITE),
        _pair("link_on_dark", primary, neutral["950"]),
    ]
    for role, hex_color in (roles | semantic).items():
        pairs.append(_pair(f"text_on_{role}", colors.best_text(hex_color), hex_color))
    notes = list(repairs or [])
    notes += [
        f"{pair.name}: foreground darkened or lightened to {pair.foreground} for AA"
        for pair in pairs
        if pair.repaired
    ]
    return Palette(
        source=source,
        mode=mode,
        roles=roles,
        semantic=semantic,
        neutral=neutral,
        pairs=pairs,
        dominant=list(dominant or []),
        name=name,
        rationale=rationale,
        repairs=notes,
    )


def analysed(palette: Palette) -> Palette:
    """`palette` with `infos` filled in."""
    colours = (*palette.roles.values(), *palette.semantic.values(), *palette.neutral.values())
    return replace(palette, infos={hex_color: ColorInfo.of(hex_color) for hex_color in colours})


def _pair(name: str, foreground: str, background: str) -> Pair:
    fixed = colors.ensure_contrast(foreground, background, AA)
    return Pair(name, fixed, background, colors.contrast(fixed, background), repaired=fixed != foreground)


def from_color(base: str, mode: Harmony) -> Palette:
    secondary, accent = colors.harmony(base, mode)
    return build(base, secondary, accent, source=DesignSource.color, mode=mode)


def analysed_from_color(base: str, mode: Harmony) -> Palette:
    """The palette answer's whole colour science for a base colour, in one call."""
    return analysed(from_color(base, mode))


def rendered_from_color(base: str, mode: Harmony, render: Callable[[Palette], Rendered]) -> Rendered:
    """`analysed_from_color` as `render` shows it: what a compute worker runs, so that the server gets
    back the rendered answer rather than the objects it is made from."""
    return render(analysed_from_color(base, mode))


def roles_from_dominant(dominant: list[DominantColor]) -> tuple[str, str, str] | None:
    """Primary, secondary and accent among an image's dominant colours: the chromatic ones by area
    (a logo's white background is not its brand colour), filled in by harmony when there are too few."""
    if not dominant:
        return None
    chromatic = [color.hex for color in dominant if colors.is_chromatic(color.hex)]
    picked: list[str] = []
    for candidate in chromatic:
        if all(colors.distance(candidate, kept) >= 0.08 for kept in picked):
            picked.append(candidate)
    if not picked:
        picked.append(dominant[0].hex)
    secondary, accent = colors.harmony(picked[0], "complementary")
    if len(picked) == 1:
        picked.append(secondary)
    if len(picked) == 2:
        picked.append(accent)
    return picked[0], picked[1], picked[2]


# --- the paid endpoint ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaletteRequest:
    """Exactly one source; `mode` is a harmony (colour, prompt) or a quantizer (image)."""

    base_color: str | None = None
    upload_id: uuid.UUID | None = None
    prompt: str | None = None
    mode: str | None = None


@dataclass(frozen=True)
class PaidPalette(Generic[Rendered]):
    id: uuid.UUID
    rendered: Rendered  # the analysed palette, as `create`'s `render` shows it
    credits_charged: int  # millicredits
    balance: int  # millicredits, after


async def create(
    ctx: Container,
    model: TextModel | None,
    user_id: uuid.UUID,
    request: PaletteRequest,
    render: Callable[[Palette], Rendered],
) -> PaidPalette[Rendered]:
    """A palette from a colour, an image or a brief, charged PALETTE_COST_CREDITS on success only, and
    rendered by `render` (a module-level function: a worker process may run it)."""
    price = to_millicredits(ctx.settings.palette_cost_credits)
    palette_id = uuid.uuid4()
    if request.base_color is not None:
        # Milliseconds of colour science and rendering in a worker process, then the charge alone in a
        # Core transaction: no balance check first (the spend refuses it all the same) and no ORM
        # session, on the busiest paid route.
        mode = cast(Harmony, request.mode or "complementary")
        rendered = await ctx.compute.run(rendered_from_color, request.base_color, mode, render)
        balance = await spend.charge_alone(ctx.database, user_id, UsageAction.palette, price, palette_id)
        return PaidPalette(palette_id, rendered, price, balance)
    if request.prompt is not None and model is None:
        raise ProviderNotConfigured("No language model is configured (OPENAI_API_KEY or ANTHROPIC_API_KEY).")
    async with ctx.database.session_scope() as session:
        # An image or a brief costs more (a paid model call): the balance is checked first.
        await spend.require_balance(session, user_id, price)
        if request.upload_id is not None:
            image_mode = cast(ImageMode, request.mode or "median_cut")
            dominant = await upload_colors(session, ctx, user_id, request.upload_id, image_mode)
            roles = roles_from_dominant(dominant)
            if roles is None:
                raise UnreadableImage("The image has no opaque pixels to take colours from.")
            palette = await asyncio.to_thread(
                build, *roles, source=DesignSource.image, mode=image_mode, dominant=dominant
            )
        elif request.prompt is not None and model is not None:
            brief, llm = request.prompt, model
            idea = await spend.ask_llm(
                session, user_id, UsageAction.palette, lambda: prompting.ask_palette(llm, brief)
            )
            harmony_mode = cast(Harmony, request.mode or "complementary")
            palette = await asyncio.to_thread(from_idea, idea, harmony_mode, DesignSource.prompt)
        else:
            raise ValueError("a palette request needs one source")
        balance = await spend.charge(session, user_id, UsageAction.palette, price, palette_id)
    return PaidPalette(palette_id, render(analysed(palette)), price, balance)


def from_idea(idea: BrandIdea, mode: Harmony, source: DesignSource) -> Palette:
    """A model's (validated) colours; the missing ones derived from its primary."""
    assert idea.primary is not None
    secondary, accent = colors.harmony(idea.primary, mode)
    return build(
        idea.primary,
        idea.secondary or secondary,
        idea.accent or accent,
        source=source,
        mode=mode,
        name=idea.name,
        rationale=idea.rationale,
        repairs=idea.repairs,
    )


async def upload_colors(
    session: AsyncSession, ctx: Container, user_id: uuid.UUID, upload_id: uuid.UUID, mode: ImageMode
) -> list[DominantColor]:
    """The dominant colours of one of the user's stored uploads (404 when it is not theirs)."""
    upload = await uploads.get_owned(session, user_id, upload_id)
    try:
        data = await ctx.storage.get(upload.storage_key)
    except ObjectNotFound as exc:
        raise NotFound("The upload's file is gone.") from exc
    try:
        return await asyncio.to_thread(dominant_colors, data, mode)
    except dominant_module.UnreadableImage as exc:
        raise UnreadableImage() from exc

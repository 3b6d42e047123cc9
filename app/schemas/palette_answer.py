"""A palette as the API shows it, built from the palette service's values.

Apart from the routers because a compute worker renders the palette's part of the answer to JSON where
it computed the palette (`palette_json`): the server then unpickles a few kilobytes of bytes instead of a
hundred objects, and builds and validates no models for the busiest paid route."""

from __future__ import annotations

from app.schemas.design import (
    ColorOut,
    ContrastOut,
    DominantOut,
    OklchOut,
    PairOut,
    PaletteBodyOut,
    PaletteChargeOut,
)
from app.services.design.colors import AA, AA_LARGE, AAA
from app.services.design.palettes import ColorInfo, Pair, Palette


def contrast_out(ratio: float) -> ContrastOut:
    return ContrastOut(
        ratio=round(ratio, 2),
        aa=ratio >= AA,
        aa_large=ratio >= AA_LARGE,
        aaa=ratio >= AAA,
        aaa_large=ratio >= AA,
    )


def color_out(info: ColorInfo) -> ColorOut:
    return ColorOut(
        hex=info.hex,
        oklch=OklchOut(l=info.oklch.lightness, c=info.oklch.chroma, h=info.oklch.hue),
        on_white=contrast_out(info.contrast_white),
        on_black=contrast_out(info.contrast_black),
        text_color=info.text_color,
    )


def pair_out(pair: Pair) -> PairOut:
    return PairOut(
        name=pair.name,
        foreground=pair.foreground,
        background=pair.background,
        ratio=round(pair.ratio, 2),
        level=pair.level,
        repaired=pair.repaired,
    )


def palette_body(palette: Palette) -> PaletteBodyOut:
    """`palette` (with its `infos`, see `palettes.analysed`) as the answer shows it."""
    return PaletteBodyOut(
        source=palette.source.value,
        mode=palette.mode,
        name=palette.name,
        rationale=palette.rationale,
        **{
            role: color_out(palette.infos[hex_color])
            for role, hex_color in (palette.roles | palette.semantic).items()
        },
        neutral={shade: color_out(palette.infos[hex_color]) for shade, hex_color in palette.neutral.items()},
        pairs=[pair_out(pair) for pair in palette.pairs],
        dominant=[DominantOut(hex=color.hex, share=color.share) for color in palette.dominant],
        repairs=palette.repairs,
    )


def palette_json(palette: Palette) -> bytes:
    """`palette_body` as JSON: run where the palette was computed."""
    return PaletteBodyOut.__pydantic_serializer__.to_json(palette_body(palette))


def palette_answer(charge: PaletteChargeOut, body: bytes) -> bytes:
    """The whole answer (`PaletteOut`): the charge's fields, then those of the rendered palette."""
    fields = PaletteChargeOut.__pydantic_serializer__.to_json(charge)
    return fields[:-1] + b"," + body[1:]

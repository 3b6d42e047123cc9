from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from app.schemas.base import Schema
from app.schemas.users import Credits

HARMONY_MODES = ("complementary", "analogous", "triadic", "split_complementary", "square", "monochromatic")
IMAGE_MODES = ("median_cut", "octree", "kmeans")
PaletteMode = Literal[
    "complementary",
    "analogous",
    "triadic",
    "split_complementary",
    "square",
    "monochromatic",
    "median_cut",
    "octree",
    "kmeans",
]

# Inputs: a colour is #rgb or #rrggbb (stored lower case, 6 digits).
HexInput = Annotated[
    str,
    Field(pattern=r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$", examples=["#3b82f6"]),
    AfterValidator(
        lambda value: "#" + "".join(ch * 2 for ch in value[1:]).lower() if len(value) == 4 else value.lower()
    ),
]
Hex = Annotated[str, Field(pattern=r"^#[0-9a-f]{6}$")]
# Shadow colours carry their alpha: #rrggbbaa.
HexAlphaInput = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{8}$"), AfterValidator(str.lower)]
# Token names: lower case, digits and dashes (they become CSS/SCSS names); a colour's own value is DEFAULT.
Key = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
ShadeKey = Annotated[str, Field(pattern=r"^(DEFAULT|[a-z0-9][a-z0-9-]{0,31})$")]


def _canonical_dimension(value: str) -> str:
    """ "1.50rem" -> "1.5rem", "-0px" -> "0px": one spelling per length, so every export reads back equal."""
    unit = value[-3:] if value.endswith("rem") else value[-2:]
    number = value[: -len(unit)]
    text = number.rstrip("0").rstrip(".") if "." in number else number
    return ("0" if text in ("-0", "") else text) + unit


Dimension = Annotated[
    str,
    Field(pattern=r"^(0|[1-9][0-9]{0,3})(\.[0-9]{1,4})?(px|rem)$", examples=["1rem"]),
    AfterValidator(_canonical_dimension),
]
SignedDimension = Annotated[
    str,
    Field(pattern=r"^-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,4})?(px|rem)$"),
    AfterValidator(_canonical_dimension),
]
FontName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$", examples=["Inter"])]
Tag = Annotated[
    str,
    AfterValidator(str.lower),
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$", examples=["minimal"]),
]
Tags = Annotated[list[Tag], Field(max_length=10), AfterValidator(lambda tags: sorted(set(tags)))]


class _Strict(Schema):
    model_config = ConfigDict(extra="forbid")


# --- palettes --------------------------------------------------------------------------------------


class PaletteIn(_Strict):
    """Exactly one of `base_color`, `upload_id` (one of your uploads) and `prompt` (needs an LLM).
    `mode`: for a colour or a prompt, the harmony (default complementary); for an image, the quantizer
    (default median_cut)."""

    base_color: HexInput | None = None
    upload_id: uuid.UUID | None = None
    prompt: str | None = Field(default=None, min_length=3, max_length=1000)
    mode: PaletteMode | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PaletteIn:
        given = [name for name in ("base_color", "upload_id", "prompt") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of base_color, upload_id and prompt")
        _check_mode(self.mode, image=self.upload_id is not None)
        return self


def _check_mode(mode: str | None, *, image: bool) -> None:
    if mode is None:
        return
    allowed = IMAGE_MODES if image else HARMONY_MODES
    if mode not in allowed:
        source = "an image" if image else "a colour or a prompt"
        raise ValueError(f"mode {mode!r} does not apply to {source}; use one of {', '.join(allowed)}")


class OklchOut(Schema):
    l: float = Field(description="Lightness, 0..1.")  # noqa: E741 - OKLCH's own letter
    c: float = Field(description="Chroma, 0 and up.")
    h: float = Field(description="Hue in degrees (0 for a grey).")


class ContrastOut(Schema):
    ratio: float
    aa: bool = Field(description="Normal text, 4.5:1.")
    aa_large: bool = Field(description="Large text and UI components, 3:1.")
    aaa: bool = Field(description="Normal text, 7:1.")
    aaa_large: bool = Field(description="Large text, 4.5:1.")


class ColorOut(Schema):
    hex: Hex
    oklch: OklchOut
    on_white: ContrastOut = Field(description="This colour as text on white.")
    on_black: ContrastOut = Field(description="This colour as text on black.")
    text_color: Hex = Field(description="The text colour to use on this colour (white or black).")


class PairOut(Schema):
    name: str
    foreground: Hex
    background: Hex
    ratio: float
    level: Literal["AA", "AAA"]
    repaired: bool = Field(description="The foreground was made lighter or darker to reach AA.")


class DominantOut(Schema):
    hex: Hex
    share: float = Field(description="Share of the image's opaque area, 0..1.")


class PaletteBodyOut(Schema):
    """The palette itself: what a compute worker renders (see app/schemas/palette_answer.py)."""

    source: Literal["color", "image", "prompt"]
    mode: str
    name: str | None
    rationale: str | None
    primary: ColorOut
    secondary: ColorOut
    accent: ColorOut
    neutral: dict[str, ColorOut] = Field(description="Shades 50..950.")
    success: ColorOut
    warning: ColorOut
    danger: ColorOut
    info: ColorOut
    pairs: list[PairOut] = Field(description="Recommended text/background pairs; every one passes AA.")
    dominant: list[DominantOut] = Field(description="Images only: the dominant colours, by area.")
    repairs: list[str]


class PaletteChargeOut(Schema):
    """The palette answer's own fields besides the palette: its id and what it cost."""

    id: uuid.UUID
    credits_charged: Credits
    credits: Credits = Field(description="Your balance after this palette.")


class PaletteOut(PaletteChargeOut, PaletteBodyOut):
    """A paid palette: the palette and its charge."""


# --- design systems ----------------------------------------------------------------------------------


class TypographyIn(_Strict):
    families: dict[Key, Annotated[list[FontName], Field(min_length=1, max_length=8)]] = Field(
        default_factory=dict, max_length=8
    )
    sizes: dict[Key, Dimension] = Field(default_factory=dict, max_length=20)
    weights: dict[Key, Annotated[int, Field(ge=1, le=1000)]] = Field(default_factory=dict, max_length=12)
    line_heights: dict[Key, Annotated[float, Field(ge=0.5, le=4)]] = Field(
        default_factory=dict, max_length=12
    )


class ShadowLayerIn(_Strict):
    x: SignedDimension
    y: SignedDimension
    blur: Dimension
    spread: SignedDimension
    color: HexAlphaInput


ColorGroups = dict[Key, Annotated[dict[ShadeKey, HexInput], Field(min_length=1, max_length=24)]]
Shadows = dict[Key, Annotated[list[ShadowLayerIn], Field(min_length=1, max_length=4)]]


class DesignContentIn(_Strict):
    colors: ColorGroups = Field(default_factory=dict, max_length=24)
    typography: TypographyIn = Field(default_factory=TypographyIn)
    spacing: dict[Key, Dimension] = Field(default_factory=dict, max_length=40)
    radii: dict[Key, Dimension] = Field(default_factory=dict, max_length=16)
    shadows: Shadows = Field(default_factory=dict, max_length=12)


class DesignSystemIn(DesignContentIn):
    name: str = Field(min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    tags: Tags = Field(default_factory=list)


class DesignSystemUpdateIn(_Strict):
    """Only the fields sent change. `version`: the version you edited; a 409 answers when it is no longer
    the current one (someone saved in between)."""

    version: int | None = Field(default=None, ge=1)
    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    tags: Tags | None = None
    colors: ColorGroups | None = Field(default=None, max_length=24)
    typography: TypographyIn | None = None
    spacing: dict[Key, Dimension] | None = Field(default=None, max_length=40)
    radii: dict[Key, Dimension] | None = Field(default=None, max_length=16)
    shadows: Shadows | None = Field(default=None, max_length=12)

    @model_validator(mode="after")
    def _no_nulls(self) -> DesignSystemUpdateIn:
        for name in self.model_fields_set - {"version", "description"}:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class GenerateIn(_Strict):
    """At least one of `brand_description` (needs an LLM), `base_color` and `upload_id` (not both of the
    last two). `tier`: `colors` (the palette as tokens) or `full` (plus type, spacing, radii, shadows)."""

    brand_description: str | None = Field(default=None, min_length=3, max_length=1000)
    base_color: HexInput | None = None
    upload_id: uuid.UUID | None = None
    tier: Literal["colors", "full"] = "full"
    mode: PaletteMode | None = None
    name: str | None = Field(default=None, min_length=1, max_length=120)

    @model_validator(mode="after")
    def _sources(self) -> GenerateIn:
        if self.base_color is None and self.upload_id is None and self.brand_description is None:
            raise ValueError("give brand_description, base_color or upload_id")
        if self.base_color is not None and self.upload_id is not None:
            raise ValueError("give base_color or upload_id, not both")
        _check_mode(self.mode, image=self.upload_id is not None)
        return self


class TypographyOut(Schema):
    families: dict[str, list[str]] = Field(default_factory=dict)
    sizes: dict[str, str] = Field(default_factory=dict)
    weights: dict[str, int] = Field(default_factory=dict)
    line_heights: dict[str, float] = Field(default_factory=dict)


class ShadowLayerOut(Schema):
    x: str
    y: str
    blur: str
    spread: str
    color: str


class OwnerOut(Schema):
    display_name: str


class DesignSystemOut(Schema):
    id: uuid.UUID
    name: str
    description: str | None
    source: str
    colors: dict[str, dict[str, str]]
    typography: TypographyOut
    spacing: dict[str, str]
    radii: dict[str, str]
    shadows: dict[str, list[ShadowLayerOut]]
    tags: list[str]
    version: int
    is_public: bool
    featured: bool
    shared_at: datetime | None
    created_at: datetime
    updated_at: datetime
    is_owner: bool
    owner: OwnerOut | None = Field(description="Shared systems of others: who made it (a display name).")


class GeneratedOut(Schema):
    design_system: DesignSystemOut
    pairs: list[PairOut] = Field(description="Recommended text/background pairs; every one passes AA.")
    repairs: list[str]
    credits_charged: Credits
    credits: Credits = Field(description="Your balance after it.")


class DesignSystemPageOut(Schema):
    items: list[DesignSystemOut]
    next_cursor: str | None


# --- usage -----------------------------------------------------------------------------------------


class UsageDayOut(Schema):
    day: date
    action: str
    count: int = Field(description="Successful actions.")
    failed: int = Field(description="Failed attempts (nothing charged).")
    credits: Credits


class UsageTotalOut(Schema):
    action: str
    count: int
    failed: int
    credits: Credits


class UsageOut(Schema):
    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    days: list[UsageDayOut]
    totals: list[UsageTotalOut]
    credits: Credits = Field(description="Credits spent over the period.")

    model_config = ConfigDict(populate_by_name=True)

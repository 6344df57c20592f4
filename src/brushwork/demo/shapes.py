"""The shapes world: one named shape in one named colour on a plain background, drawn by Pillow.

A `ShapeSpec` says everything about a picture (shape, colours, size, position, rotation, fill);
`render(spec)` draws it, the same pixels every time; `caption(spec)` says what is drawn, in the
stable wording the demo model is trained on (`a red circle on a white background`);
`sample_specs(rng, shapes, count)` draws specs from a seeded `random.Random`.

The base model sees `BASE_SHAPES`; `HELD_OUT_SHAPES` are kept back for the training tests to
teach. Edges are anti-aliased by drawing at `supersample` times the size and downscaling with
LANCZOS.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from brushwork.core.errors import ConfigError

BASE_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
HELD_OUT_SHAPES: tuple[str, ...] = ("heart", "cross", "crescent")
ALL_SHAPES: tuple[str, ...] = BASE_SHAPES + HELD_OUT_SHAPES

# Far apart in RGB and in hue, so they survive a VAE round trip and a blurry sampler.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 30),
    "green": (40, 170, 60),
    "blue": (30, 80, 220),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SIZES: tuple[str, ...] = ("large", "small")
FILLS: tuple[str, ...] = ("solid", "striped")

# Half-extent of the shape as a fraction of the image side, per size word.
_EXTENT = {"large": (0.30, 0.38), "small": (0.16, 0.22)}
_MAX_SHIFT = 0.12  # largest centre offset from the middle, fraction of the side
_MAX_ROTATION = 15.0  # degrees either way; more would turn a square into a diamond
_STRIPE_PERIOD = 1 / 8  # of the image side
_OUTLINE = 1 / 32  # outline width of a striped shape, of the image side


@dataclass(frozen=True)
class ShapeSpec:
    """One picture of the shapes world. `x`, `y` (centre) and `extent` (half-size) are
    fractions of the image side; `rotation` is in degrees, counter-clockwise."""

    shape: str
    color: str
    background: str
    size: str = "large"
    fill: str = "solid"
    extent: float = 0.34
    x: float = 0.5
    y: float = 0.5
    rotation: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, ALL_SHAPES)
        _check_choice("colour", self.color, COLOR_NAMES)
        _check_choice("background colour", self.background, COLOR_NAMES)
        _check_choice("size", self.size, SIZES)
        _check_choice("fill", self.fill, FILLS)
        if self.color == self.background:
            raise ConfigError(
                f"a {self.color} {self.shape} on a {self.background} background cannot be seen",
                hint="pick a background colour that differs from the shape colour",
            )
        if not 0.0 < self.extent <= 0.5:
            raise ConfigError(f"shape extent {self.extent} is outside (0, 0.5]")


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}", hint=f"choose from {', '.join(allowed)}")


def parse_names(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """Split a comma list such as `circle,square` and check every name (`all` means all)."""
    if text.strip().lower() == "all":
        return tuple(allowed)
    names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    if not names:
        raise ConfigError(f"no {what} given", hint=f"choose from {', '.join(allowed)}")
    for name in names:
        _check_choice(what, name, allowed)
    return names


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def caption(spec: ShapeSpec, *, noun: str | None = None) -> str:
    """What is drawn, e.g. `a red circle on a white background`.

    A small shape says `small`, a striped one `striped` (`a small red striped circle on ...`);
    large and solid are the unsaid defaults. `noun` replaces the shape's name, so a held-out
    shape can be taught under a trigger word (`a red sks on a white background`).
    """
    words = [w for w in ("small" if spec.size == "small" else "", spec.color) if w]
    if spec.fill == "striped":
        words.append("striped")
    words.append(noun if noun is not None else spec.shape)
    subject = " ".join(words)
    return (
        f"{_article(subject)} {subject} on {_article(spec.background)} {spec.background} background"
    )


def sample_specs(
    rng: random.Random,
    shapes: Sequence[str],
    count: int,
    *,
    colors: Sequence[str] = COLOR_NAMES,
    backgrounds: Sequence[str] = COLOR_NAMES,
    sizes: Sequence[str] = ("large",),
    fills: Sequence[str] = ("solid",),
    jitter: bool = True,
) -> list[ShapeSpec]:
    """`count` specs; shapes take turns (balanced), the rest is drawn from `rng`.

    The background is drawn from `backgrounds` minus the shape colour. Without `jitter` every
    shape sits in the middle, upright, at the middle of its size range.
    """
    if not shapes:
        raise ConfigError("no shapes to draw", hint=f"choose from {', '.join(ALL_SHAPES)}")
    if not colors or not sizes or not fills:
        raise ConfigError("colours, sizes and fills each need at least one choice")
    specs = []
    for index in range(count):
        color = rng.choice(list(colors))
        choices = [name for name in backgrounds if name != color]
        if not choices:
            raise ConfigError(
                f"no background colour left for a {color} shape",
                hint="give at least one background colour that is not a shape colour",
            )
        specs.append(
            _one_spec(
                rng, shapes[index % len(shapes)], color, rng.choice(choices), sizes, fills, jitter
            )
        )
    return specs


def _one_spec(
    rng: random.Random,
    shape: str,
    color: str,
    background: str,
    sizes: Sequence[str],
    fills: Sequence[str],
    jitter: bool,
) -> ShapeSpec:
    size = rng.choice(list(sizes))
    fill = rng.choice(list(fills))
    low, high = _EXTENT[size]
    if not jitter:
        return ShapeSpec(shape, color, background, size, fill, (low + high) / 2)
    extent = rng.uniform(low, high)
    room = min(_MAX_SHIFT, 0.5 - extent - 0.04)
    return ShapeSpec(
        shape,
        color,
        background,
        size,
        fill,
        round(extent, 4),
        round(0.5 + rng.uniform(-room, room), 4),
        round(0.5 + rng.uniform(-room, room), 4),
        round(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION), 2),
    )


def render(spec: ShapeSpec, size: int = 64, *, supersample: int = 4) -> Image.Image:
    """Draw `spec` as an RGB image `size` pixels square; the same spec gives the same pixels."""
    if size < 8:
        raise ConfigError(f"image size {size} is too small to draw a shape", hint="use 32 or more")
    canvas = size * supersample
    mask = shape_mask(spec, canvas)
    image = Image.new("RGB", (canvas, canvas), COLORS[spec.background])
    image.paste(COLORS[spec.color], (0, 0, canvas, canvas), mask)
    if spec.fill == "striped":
        inner = _eroded(mask, max(1, round(canvas * _OUTLINE)))
        gaps = ImageChops.multiply(inner, _stripe_gaps(canvas))
        image.paste(COLORS[spec.background], (0, 0, canvas, canvas), gaps)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _eroded(mask: Image.Image, radius: int) -> Image.Image:
    """The mask shrunk by `radius` pixels (a box blur stays at 255 only deep inside)."""
    return mask.filter(ImageFilter.BoxBlur(radius)).point(lambda v: 255 if v > 250 else 0)


def _stripe_gaps(canvas: int) -> Image.Image:
    """White where a diagonal stripe gap is: stripes and gaps of equal width."""
    gaps = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(gaps)
    period = canvas * _STRIPE_PERIOD
    half = period / 2
    offset = -float(canvas)
    while offset < canvas:
        draw.polygon(
            [
                (offset, 0),
                (offset + half, 0),
                (offset + half + canvas, canvas),
                (offset + canvas, canvas),
            ],
            fill=255,
        )
        offset += period
    return gaps


def shape_mask(spec: ShapeSpec, canvas: int) -> Image.Image:
    """The shape's silhouette on a `canvas`-pixel square: 255 inside, 0 outside."""
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    radius = spec.extent * canvas
    centre = (spec.x * canvas, spec.y * canvas)
    if spec.shape == "circle":
        _disc(draw, centre, radius, 255)
    elif spec.shape == "crescent":
        _crescent(draw, centre, radius, spec.rotation)
    else:
        points = [_place(p, centre, radius, spec.rotation) for p in _OUTLINES[spec.shape]()]
        draw.polygon(points, fill=255)
    return mask


def _disc(draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float, fill: int) -> None:
    cx, cy = centre
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)


def _crescent(
    draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float, rotation: float
) -> None:
    """A disc with an offset disc bitten out; the bite faces right, turned by `rotation`."""
    _disc(draw, _place((-0.05, 0.0), centre, radius, rotation), radius * 0.95, 255)
    _disc(draw, _place((0.4, -0.15), centre, radius, rotation), radius * 0.8, 0)


def _place(
    point: tuple[float, float], centre: tuple[float, float], radius: float, rotation: float
) -> tuple[float, float]:
    """Unit-square coordinates (y down) to canvas pixels: rotate, scale, move."""
    angle = math.radians(rotation)
    x, y = point
    rx = x * math.cos(angle) + y * math.sin(angle)
    ry = -x * math.sin(angle) + y * math.cos(angle)
    return (centre[0] + rx * radius, centre[1] + ry * radius)


def _square() -> list[tuple[float, float]]:
    return [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]


def _triangle() -> list[tuple[float, float]]:
    corners = [(-90.0, 1.1), (30.0, 1.1), (150.0, 1.1)]
    return [
        (r * math.cos(math.radians(a)), r * math.sin(math.radians(a)) + 0.275) for a, r in corners
    ]


def _star() -> list[tuple[float, float]]:
    points = []
    for index in range(10):
        r = 1.0 if index % 2 == 0 else 0.42
        angle = math.radians(-90.0 + 36.0 * index)
        points.append((r * math.cos(angle), r * math.sin(angle) + 0.095))
    return points


def _heart() -> list[tuple[float, float]]:
    raw = []
    for index in range(96):
        t = 2 * math.pi * index / 96
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        raw.append((x, y))
    top, bottom = min(y for _, y in raw), max(y for _, y in raw)
    middle, scale = (top + bottom) / 2, max(16.0, (bottom - top) / 2)
    return [(x / scale, (y - middle) / scale) for x, y in raw]


def _cross() -> list[tuple[float, float]]:
    w, r = 0.32, 0.95
    return [
        (-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w),
        (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w),
    ]  # fmt: skip


_OUTLINES = {
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "heart": _heart,
    "cross": _cross,
}

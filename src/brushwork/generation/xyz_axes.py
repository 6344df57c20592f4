"""The axes of an X/Y/Z plot: their types, and their values parsed as A1111's script parses them.

Values are a comma-separated list (CSV: quote a value holding a comma, ``"a, b",c``). Number
axes also take ranges, as A1111 (``scripts/xyz_grid.py``):

* ``1-5`` -> 1, 2, 3, 4, 5; ``1-10 (+3)`` -> 1, 4, 7, 10 (a step in parentheses); ``10-5 (-3)``
  -> 10, 7;
* ``1-10 [5]`` -> 1, 3, 5, 7, 10 (a count in brackets: evenly spaced, whole-number axes drop the
  fraction); ``0-1 [5]`` -> 0.0, 0.25, 0.5, 0.75, 1.0 on a decimal axis;
* ranges and single values mix: ``1-3, 8, 10-20 (+10)``.

One difference: a descending range without a step (``5-1``) counts down (A1111 gives nothing).
Seed axes resolve ``-1`` to a random seed once, so every cell of a row uses the same one.
Labels are A1111's: ``Steps: 20``, ``CFG Scale: 7.0`` (decimal axes print their float),
the bare value for Prompt S/R and Sampler, the file name for Checkpoint name.
"""

from __future__ import annotations

import csv
import io
import math
import random
import re
from dataclasses import dataclass
from enum import Enum

from brushwork.core.errors import ConfigError
from brushwork.samplers import resolve_seed

AxisValue = int | float | str

_NUMBER = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE_STEP = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})(?:\s*\(\s*({_NUMBER})\s*\))?\s*")
_RANGE_COUNT = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*\[\s*(\d+)\s*\]\s*")
MAX_RANGE_VALUES = 10_000  # a typo like 1-1000000 should fail, not plan a million cells
MODEL_SUFFIXES = frozenset({"safetensors", "pt", "ckpt", "bin"})
FLOAT_DIGITS = 8  # A1111 rounds decimal labels to 8 digits; values are rounded the same


class LabelStyle(Enum):
    """How a value is written on the grid (A1111's ``format_value*`` functions)."""

    WITH_LABEL = "label"  # "Steps: 20"
    VALUE = "value"  # "red"
    FILE_NAME = "file name"  # "model.safetensors"
    NAME_WITH_LABEL = "name"  # "LoRA: style" (a path shows its file stem)


@dataclass(frozen=True)
class AxisType:
    """One kind of axis: its CLI name, A1111's label, the type of its values."""

    key: str
    label: str
    value_type: type[int] | type[float] | type[str]
    style: LabelStyle = LabelStyle.WITH_LABEL
    cost: float = 0.0  # how expensive a change is: changes of costly axes are made least often
    aliases: tuple[str, ...] = ()
    keep_empty: bool = False  # an empty value means something (Prompt S/R: delete the text)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.key, normalized_name(self.label), *self.aliases)


AXIS_TYPES: tuple[AxisType, ...] = (
    AxisType("seed", "Seed", int),
    AxisType("var-seed", "Var. seed", int, aliases=("subseed", "variation-seed")),
    AxisType("var-strength", "Var. strength", float, aliases=("subseed-strength",)),
    AxisType("steps", "Steps", int),
    AxisType("cfg", "CFG Scale", float, aliases=("cfg-scale",)),
    AxisType(
        "prompt-sr",
        "Prompt S/R",
        str,
        LabelStyle.VALUE,
        aliases=("sr", "prompt-search-replace"),
        keep_empty=True,
    ),
    AxisType("sampler", "Sampler", str, LabelStyle.VALUE),
    AxisType("scheduler", "Schedule type", str, aliases=("schedule",)),
    AxisType(
        "checkpoint", "Checkpoint name", str, LabelStyle.FILE_NAME, cost=1.0, aliases=("model",)
    ),
    AxisType("vae", "VAE", str, cost=0.7),
    AxisType("lora", "LoRA", str, LabelStyle.NAME_WITH_LABEL, aliases=("lora-name",)),
    AxisType("lora-strength", "LoRA strength", float, aliases=("lora-weight",)),
    AxisType("clip-skip", "Clip skip", int),
    AxisType("denoising", "Denoising", float, aliases=("denoise", "denoising-strength")),
    AxisType("size", "Size", str),
)
NOTHING = "nothing"  # A1111's "Nothing": no axis


def normalized_name(name: str) -> str:
    """``CFG Scale`` -> ``cfg-scale``, ``Var. seed`` -> ``var-seed``."""
    return re.sub(r"[\s_.]+", "-", name.strip().casefold()).strip("-")


def axis_type_names() -> str:
    return ", ".join(axis.key for axis in AXIS_TYPES)


def find_axis_type(name: str) -> AxisType | None:
    """The axis type a name means (CLI key, A1111 label or alias); None for ``nothing``."""
    wanted = normalized_name(name)
    if wanted in (NOTHING, ""):
        return None
    for axis_type in AXIS_TYPES:
        if wanted in axis_type.names:
            return axis_type
    raise ConfigError(
        f"unknown axis type {name!r}; valid types: {axis_type_names()}",
        hint="A1111's labels work too: CFG Scale, Prompt S/R, Checkpoint name, ...",
    )


@dataclass(frozen=True)
class Axis:
    """One axis of the plot: its type, its values (typed, ranges expanded) and the text given."""

    type: AxisType
    values: tuple[AxisValue, ...]
    text: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(format_label(self.type, value) for value in self.values)

    @property
    def fixed_values(self) -> str | None:
        """The seeds actually used, for a seed axis (A1111's ``Fixed X Values``)."""
        if self.type.key not in ("seed", "var-seed"):
            return None
        return ", ".join(str(value) for value in self.values)


def format_label(axis_type: AxisType, value: AxisValue) -> str:
    if isinstance(value, float):
        value = round(value, FLOAT_DIGITS)
    if axis_type.style is LabelStyle.VALUE:
        return str(value)
    if axis_type.style is LabelStyle.FILE_NAME:
        return file_name(str(value))
    if axis_type.style is LabelStyle.NAME_WITH_LABEL:
        name = file_name(str(value))
        stem, dot, suffix = name.rpartition(".")
        return f"{axis_type.label}: {stem if dot and suffix.lower() in MODEL_SUFFIXES else name}"
    return f"{axis_type.label}: {value}"


def file_name(value: str) -> str:
    """The last part of a path (either slash), or the value itself."""
    return value.replace("\\", "/").rsplit("/", 1)[-1]


def split_values(text: str) -> list[str]:
    """A comma-separated list, CSV-quoted where a value holds a comma; items stripped."""
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    return [item.strip() for row in rows for item in row]


def parse_axis(type_name: str, text: str, *, seed_rng: random.Random | None = None) -> Axis | None:
    """An axis from its type name and values text (None for the ``nothing`` type)."""
    axis_type = find_axis_type(type_name)
    if axis_type is None:
        return None
    values = parse_values(axis_type, text)
    if axis_type.key in ("seed", "var-seed"):
        values = [resolve_seed(int(value), rng=seed_rng) for value in values]
    return Axis(axis_type, tuple(values), text)


def parse_values(axis_type: AxisType, text: str) -> list[AxisValue]:
    """The values of one axis, ranges expanded, converted to the axis's type."""
    items = split_values(text)
    if not axis_type.keep_empty:
        items = [item for item in items if item]
    if not items:
        raise ConfigError(f"{axis_type.label} axis: no values in {text!r}")
    values: list[AxisValue] = []
    for item in items:
        if axis_type.value_type is str:
            values.append(item)
        else:
            values += _numbers(axis_type, item)
        if len(values) > MAX_RANGE_VALUES:
            raise ConfigError(f"{axis_type.label} axis: more than {MAX_RANGE_VALUES} values")
    return values


def _numbers(axis_type: AxisType, item: str) -> list[AxisValue]:
    whole = axis_type.value_type is int
    stepped = _RANGE_STEP.fullmatch(item)
    counted = _RANGE_COUNT.fullmatch(item)
    if stepped is not None:
        start, end = _number(stepped.group(1)), _number(stepped.group(2))
        step = _number(stepped.group(3)) if stepped.group(3) else (1.0 if end >= start else -1.0)
        return _stepped(axis_type, item, start, end, step, whole)
    if counted is not None:
        start, end = _number(counted.group(1)), _number(counted.group(2))
        return _counted(axis_type, item, start, end, int(counted.group(3)), whole)
    try:
        number = float(item) if not whole else int(item.replace(" ", ""))
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ConfigError(
            f"{axis_type.label} axis: {item!r} is not {kind} or a range",
            hint="write values like 1, 2, 3 or ranges like 1-5, 1-10 (+2), 1-10 [4]",
        ) from None
    if not math.isfinite(number):
        raise ConfigError(f"{axis_type.label} axis: {item!r} is not a finite number")
    return [number]


def _number(text: str) -> float:
    return float(text.replace(" ", ""))


def _stepped(
    axis_type: AxisType, item: str, start: float, end: float, step: float, whole: bool
) -> list[AxisValue]:
    if whole and not (start.is_integer() and end.is_integer() and step.is_integer()):
        raise ConfigError(f"{axis_type.label} axis: {item!r} is not a range of whole numbers")
    if step == 0 or (end - start) * step < 0:
        raise ConfigError(
            f"{axis_type.label} axis: the step of {item!r} never reaches the end",
            hint="count up with (+N), down with (-N)",
        )
    count = math.floor((end - start) / step + 1e-9) + 1
    _check_count(axis_type, item, count)
    if whole:
        return [int(start) + index * int(step) for index in range(count)]
    return [round(start + index * step, FLOAT_DIGITS) for index in range(count)]


def _counted(
    axis_type: AxisType, item: str, start: float, end: float, count: int, whole: bool
) -> list[AxisValue]:
    _check_count(axis_type, item, count)
    if count == 1:
        points = [start]
    else:
        points = [start + (end - start) * index / (count - 1) for index in range(count)]
    if whole:
        return [int(point) for point in points]  # A1111: int() of numpy's linspace
    return [round(point, FLOAT_DIGITS) for point in points]


def _check_count(axis_type: AxisType, item: str, count: int) -> None:
    if count < 1:
        raise ConfigError(f"{axis_type.label} axis: {item!r} gives no values")
    if count > MAX_RANGE_VALUES:
        raise ConfigError(f"{axis_type.label} axis: {item!r} gives {count} values, too many")

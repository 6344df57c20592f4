"""The X/Y/Z plot: one request varied along up to three axes, drawn as a labelled grid.

    plan = plan_xyz(request, x=parse_axis("steps", "10,20"), y=parse_axis("cfg", "5-9 (+2)"),
                    checkpoint=path, library=library)
    result = run_xyz(plan, lambda path, vae: load_model(path, vae=vae))
    saved = save_xyz(result, Path("outputs"))

As A1111's X/Y/Z plot script: every cell is the request with the X, then Y, then Z value applied;
a seed of -1 is drawn once so every cell shares it (unless seed is an axis); Prompt S/R replaces
its first value in the prompt and the negative prompt (the first cell keeps the prompt as it is);
a Z axis gives one sub-grid per value and a combined image. Values are checked before anything
is loaded: every cell's request is built, and checkpoints, VAEs and LoRAs are looked up in the
library (an unknown name fails with the closest names).

Cells are drawn in an order that changes the checkpoint, then the VAE, least often: each
checkpoint is loaded once; a VAE change swaps the VAE in place; LoRAs are merged per cell (the
generator reads each file once). The ``lora`` axis adds a LoRA outside the prompt (``name``,
``name:weight``, a file path, or ``none``); ``lora-strength`` sets the weight of that LoRA, or
of the one LoRA given with the request (``loras``). Both are recorded as ``Extra LoRAs``.

The grid PNG (``<out>/txt2img-grids/<date>/xyz_grid-NNNN.png``) holds the first cell's infotext
with A1111's ``Script: X/Y/Z plot, X Type: ..., X Values: ...`` fields in ``parameters``, and the
whole plot in a ``brushwork.xyz`` text chunk (JSON, also written beside it as ``.json``): the
axes, and for every cell its position, its box in the image and the infotext of its images.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.generation.engine import GeneratedImage, Generator, ProgressCallback
from brushwork.generation.request import GenerationRequest, LoraChoice
from brushwork.generation.unet_runner import CompileOptions
from brushwork.generation.xyz_axes import Axis
from brushwork.generation.xyz_epochs import LibraryWithLoraFiles, lora_query
from brushwork.library.catalog import Library
from brushwork.loading import LoadedModel, swap_vae
from brushwork.loading.vae import VaeSpec
from brushwork.samplers import resolve_seed

logger = logging.getLogger(__name__)

MAX_GRID_MEGAPIXELS = 200  # A1111's img_max_size_mp default
NO_LORA = frozenset({"none", ""})
AXIS_NAMES = ("X", "Y", "Z")
REQUEST_FIELDS: Mapping[str, str] = MappingProxyType(  # axis type -> the request field it sets
    {
        "seed": "seed",
        "var-seed": "subseed",
        "var-strength": "subseed_strength",
        "steps": "steps",
        "cfg": "cfg_scale",
        "sampler": "sampler_name",
        "scheduler": "scheduler",
        "clip-skip": "clip_skip",
        "denoising": "denoising_strength",
    }
)

ModelLoader = Callable[[Path, VaeSpec], LoadedModel]


@dataclass(frozen=True, eq=False)
class XYZCell:
    """One cell: its place (column x, row y, sub-grid z) and what draws it."""

    x: int
    y: int
    z: int
    request: GenerationRequest
    checkpoint: Path
    vae: VaeSpec


@dataclass(frozen=True, eq=False)
class XYZPlan:
    """A checked plot: the axes and every cell's request, in grid order (z, y, then x)."""

    axes: tuple[Axis | None, Axis | None, Axis | None]
    cells: tuple[XYZCell, ...]
    library: Library | None
    vae_folders: tuple[Path, ...] = ()
    margin: int = 0
    draw_legend: bool = True

    @property
    def shape(self) -> tuple[int, int, int]:
        """Columns, rows and sub-grids."""
        counts = [len(axis.values) if axis is not None else 1 for axis in self.axes]
        return counts[0], counts[1], counts[2]

    def labels(self, index: int) -> tuple[str, ...]:
        """The labels along axis `index` (0 X, 1 Y, 2 Z); one empty label without that axis."""
        axis = self.axes[index]
        return axis.labels if axis is not None else ("",)

    def run_order(self) -> tuple[XYZCell, ...]:
        """The cells in the order that changes the checkpoint, then the VAE, least often."""
        checkpoints = list(dict.fromkeys(cell.checkpoint for cell in self.cells))
        vaes = list(dict.fromkeys(str(cell.vae) for cell in self.cells))
        order = sorted(
            enumerate(self.cells),
            key=lambda item: (
                checkpoints.index(item[1].checkpoint),
                vaes.index(str(item[1].vae)),
                item[0],
            ),
        )
        return tuple(cell for _, cell in order)


@dataclass
class _CellState:
    """A cell's settings while the axis values are applied (X, then Y, then Z)."""

    fields: dict[str, Any]
    checkpoint: Path
    vae: VaeSpec
    lora: LoraChoice | None = None
    strength: float | None = None


def plan_xyz(
    request: GenerationRequest,
    *,
    x: Axis | None = None,
    y: Axis | None = None,
    z: Axis | None = None,
    checkpoint: Path | None,
    vae: VaeSpec = "auto",
    library: Library | None = None,
    vae_folders: Sequence[Path] = (),
    margin: int = 0,
    draw_legend: bool = True,
    max_megapixels: float = MAX_GRID_MEGAPIXELS,
) -> XYZPlan:
    """Check the axes and build every cell's request (see the module docstring).

    `checkpoint` is the model of every cell; it may be None when a checkpoint axis says."""
    axes = (x, y, z)
    if margin < 0:
        raise ConfigError(f"the grid margin must be >= 0 pixels, got {margin}")
    library = _library_for(axes, library)
    resolved = [_resolve(axis, library) if axis is not None else () for axis in axes]
    if checkpoint is None:
        chosen = [
            values[0]
            for axis, values in zip(axes, resolved, strict=True)
            if axis is not None and axis.type.key == "checkpoint"
        ]
        if not chosen:
            raise ConfigError("no checkpoint to draw with", hint="give one, or a checkpoint axis")
        checkpoint = chosen[0]
    base = request.with_changes(
        seed=resolve_seed(request.seed), subseed=resolve_seed(request.subseed)
    )
    _check_lora_axes(axes, base)
    _check_denoising(axes, base)
    counts = [len(axis.values) if axis is not None else 1 for axis in axes]
    _check_size(_pixels(base) * math.prod(counts), math.prod(counts), max_megapixels)
    cells = []
    for iz in range(counts[2]):
        for iy in range(counts[1]):
            for ix in range(counts[0]):
                state = _CellState(_prompt_fields(base), checkpoint, vae)
                for axis, values, index in zip(axes, resolved, (ix, iy, iz), strict=True):
                    if axis is not None:
                        _apply(axis, values[index], state)
                cells.append(_cell(ix, iy, iz, base, state))
    _check_size(sum(_pixels(cell.request) for cell in cells), len(cells), max_megapixels)
    return XYZPlan(axes, tuple(cells), library, tuple(vae_folders), margin, draw_legend)


def _prompt_fields(request: GenerationRequest) -> dict[str, Any]:
    names = ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")
    return {name: getattr(request, name) for name in names}


def _library_for(axes: Sequence[Axis | None], library: Library | None) -> Library | None:
    """The library, listing also LoRA files a `lora` axis names by path outside it."""
    files = [
        Path(str(value)).expanduser()
        for axis in axes
        if axis is not None and axis.type.key == "lora"
        for value in axis.values
        if Path(str(value)).expanduser().is_file()
    ]
    if not files:
        return library
    if library is None:
        raise ConfigError("LoRA files need a model library to be applied from")
    return LibraryWithLoraFiles(library, files)


def _resolve(axis: Axis, library: Library | None) -> tuple[Any, ...]:
    """An axis's values as the cells use them: checkpoints, VAEs and LoRAs looked up."""
    key = axis.type.key
    try:
        if key == "checkpoint":
            return tuple(_model_path(str(v), ModelKind.CHECKPOINT, library) for v in axis.values)
        if key == "vae":
            return tuple(_vae_spec(str(v), library) for v in axis.values)
        if key == "lora":
            return tuple(_lora_choice(str(v), library) for v in axis.values)
    except BrushworkError as error:
        raise ConfigError(f"{axis.type.label} axis: {error.message}", hint=error.hint) from None
    return axis.values


def _model_path(value: str, kind: ModelKind, library: Library | None) -> Path:
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if library is None:
        raise ConfigError(f"{value!r} is not a file, and there is no library to look it up in")
    return library.find(value, kind=kind).path


def _vae_spec(value: str, library: Library | None) -> VaeSpec:
    if value.casefold() in ("auto", "none", "baked"):
        return value.casefold()
    return _model_path(value, ModelKind.VAE, library)


def _lora_choice(value: str, library: Library | None) -> LoraChoice | None:
    if value.casefold() in NO_LORA:
        return None
    if library is None:
        raise ConfigError(f"LoRA {value!r} needs a model library to be found in")
    path = Path(value).expanduser()
    if path.is_file():
        return LoraChoice(lora_query(library, path))
    name, *weights = value.split(":")
    try:
        numbers = [float(weight) for weight in weights[:2]]
    except ValueError:
        raise ConfigError(f"LoRA {value!r}: write NAME, NAME:WEIGHT or NAME:TE:UNET") from None
    library.find(name, kind=ModelKind.LORA)
    te = numbers[0] if numbers else 1.0
    return LoraChoice(name, te, numbers[1] if len(numbers) > 1 else None)


def _check_lora_axes(axes: Sequence[Axis | None], base: GenerationRequest) -> None:
    keys = [axis.type.key for axis in axes if axis is not None]
    if "lora-strength" not in keys or "lora" in keys or len(base.loras) == 1:
        return
    raise ConfigError(
        f"a LoRA strength axis needs the LoRA to vary: a lora axis, or one LoRA given with the "
        f"request ({len(base.loras)} given)",
        hint="for a <lora:name:w> tag in the prompt, vary its weight with Prompt S/R, as in A1111",
    )


def _check_denoising(axes: Sequence[Axis | None], base: GenerationRequest) -> None:
    keys = [axis.type.key for axis in axes if axis is not None]
    if "denoising" in keys and not (base.is_img2img or base.enable_hr):
        raise ConfigError(
            "the Denoising axis changes img2img and hires fix only; this request is neither",
            hint="give an init image (img2img) or turn hires fix on",
        )


def _apply(axis: Axis, value: Any, state: _CellState) -> None:
    """Apply one axis value to a cell, as A1111's ``AxisOption.apply``."""
    key, fields = axis.type.key, state.fields
    if key in REQUEST_FIELDS:
        fields[REQUEST_FIELDS[key]] = value
    elif key == "prompt-sr":
        _replace_prompt(axis, str(value), fields)
    elif key == "size":
        fields["width"], fields["height"] = _size(str(value))
    elif key == "checkpoint":
        state.checkpoint = value
    elif key == "vae":
        state.vae = value
    elif key == "lora":
        state.lora = value
    elif key == "lora-strength":
        state.strength = float(value)


def _replace_prompt(axis: Axis, replacement: str, fields: dict[str, Any]) -> None:
    search = str(axis.values[0])
    if not search:
        raise ConfigError("the first Prompt S/R value, the text to replace, is empty")
    if search not in fields["prompt"] and search not in fields["negative_prompt"]:
        raise ConfigError(
            f"Prompt S/R did not find {search!r} in the prompt or the negative prompt",
            hint="the first Prompt S/R value is the text to replace; it must be in a prompt",
        )
    for name in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
        fields[name] = fields[name].replace(search, replacement)


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise ConfigError(f"Size axis: {text!r} is not WIDTHxHEIGHT", hint="for example 512x768")
    return int(width), int(height)


def _cell(ix: int, iy: int, iz: int, base: GenerationRequest, state: _CellState) -> XYZCell:
    loras = list(base.loras)
    chosen = state.lora
    if chosen is not None and state.strength is not None:
        chosen = LoraChoice(chosen.name, state.strength)
    if chosen is not None:
        loras.append(chosen)
    elif state.strength is not None and len(base.loras) == 1:
        loras = [LoraChoice(base.loras[0].name, state.strength)]
    state.fields["loras"] = tuple(loras)
    try:
        request = base.with_changes(**state.fields)
    except BrushworkError as error:
        place = ", ".join(
            f"{name} {index + 1}" for name, index in zip(AXIS_NAMES, (ix, iy, iz), strict=True)
        )
        raise ConfigError(f"cell {place}: {error.message}", hint=error.hint) from None
    return XYZCell(ix, iy, iz, request, state.checkpoint, state.vae)


def _pixels(request: GenerationRequest) -> int:
    """The pixels a cell's images hold (after hires fix)."""
    width, height = request.hires_size if request.enable_hr else (request.width, request.height)
    return width * height * request.image_count


def _check_size(pixels: int, cells: int, max_megapixels: float) -> None:
    if pixels / 1_000_000 > max_megapixels:
        raise ConfigError(
            f"the grid would be too large ({pixels / 1_000_000:.0f} megapixels for {cells} "
            f"cells; the limit is {max_megapixels:g})",
            hint="use fewer values or a smaller size",
        )


# -- running ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class XYZCellResult:
    """A drawn cell: its images (a batch, when the request asks for more than one)."""

    cell: XYZCell
    generated: tuple[GeneratedImage, ...]

    @property
    def infotext(self) -> str:
        return self.generated[0].infotext


@dataclass(frozen=True, eq=False)
class XYZResult:
    """Every cell's images in grid order (None: not drawn, the plot was stopped)."""

    plan: XYZPlan
    cells: tuple[XYZCellResult | None, ...]
    interrupted: bool
    loads: tuple[Path, ...]  # the checkpoints loaded, in order


@dataclass(frozen=True)
class XYZProgress:
    """Cells finished so far (``cell``: the one just finished)."""

    done: int
    total: int
    cell: XYZCellResult | None = None


CellImageCallback = Callable[[XYZCell, GeneratedImage], None]


@dataclass
class _Models:
    """The loaded checkpoint and its generator; loads another only when the cell needs it."""

    load: ModelLoader
    plan: XYZPlan
    compile_options: CompileOptions | None
    loads: list[Path] = field(default_factory=list)
    generator: Generator | None = None
    checkpoint: Path | None = None
    vae: VaeSpec = None

    def generator_for(self, cell: XYZCell) -> Generator:
        if self.generator is None or cell.checkpoint != self.checkpoint:
            self.generator = None  # let the previous model go before loading the next
            logger.info("X/Y/Z plot: loading %s", cell.checkpoint.name)
            model = self.load(cell.checkpoint, cell.vae)
            self.loads.append(cell.checkpoint)
            self.generator = Generator(
                model, library=self.plan.library, compile_options=self.compile_options
            )
        elif str(cell.vae) != str(self.vae):
            swap_vae(self.generator.model, cell.vae, vae_folders=self.plan.vae_folders)
        self.checkpoint, self.vae = cell.checkpoint, cell.vae
        return self.generator


def run_xyz(
    plan: XYZPlan,
    load: ModelLoader,
    *,
    compile_options: CompileOptions | None = None,
    progress: Callable[[XYZProgress], None] | None = None,
    step_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    on_image: CellImageCallback | None = None,
) -> XYZResult:
    """Draw every cell (see `XYZPlan.run_order`). `load(checkpoint, vae)` loads a model.

    `progress` hears after each cell, `step_progress` after every sampler step of a cell;
    `cancel` stops at the next step: the cells finished are kept, the result is interrupted."""
    models = _Models(load, plan, compile_options)
    finished: dict[tuple[int, int, int], XYZCellResult] = {}
    total = len(plan.cells)
    interrupted = False
    if progress is not None:
        progress(XYZProgress(0, total))
    for cell in plan.run_order():
        if cancel is not None and cancel.is_set():
            interrupted = True
            break
        generator = models.generator_for(cell)

        def keep(item: GeneratedImage, cell: XYZCell = cell) -> None:
            if on_image is not None:
                on_image(cell, item)

        result = generator.generate(
            cell.request, progress=step_progress, cancel=cancel, on_image=keep
        )
        if result.interrupted or not result.generated:
            interrupted = True
            break
        done = XYZCellResult(cell, result.generated)
        finished[(cell.x, cell.y, cell.z)] = done
        if progress is not None:
            progress(XYZProgress(len(finished), total, done))
    ordered = tuple(finished.get((c.x, c.y, c.z)) for c in plan.cells)
    return XYZResult(plan, ordered, interrupted, tuple(models.loads))

"""X/Y/Z plots as jobs (`brushwork.generation.xyz`), and the epoch x strength grid of a
training run: queued like any generation, drawn with the worker's model cache, saved as A1111
does (``txt2img-grids/<date>/xyz_grid-NNNN.png`` with its ``.json`` record).

Axis values that name models (checkpoint, VAE, LoRA axes) must be library names: a value that
looks like a path, or that is a file relative to the server's folder, is refused (422). The
epoch x strength grid takes a training job's id; the server finds that run's files itself.
Seeds are drawn when the plot is accepted, so the plan checked then is the plan drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.jobs.names import refuse_path_like
from brushwork.jobs.queue import Job, JobContext
from brushwork.jobs.training import TrainingRun

if TYPE_CHECKING:
    from brushwork.generation import GenerationRequest
    from brushwork.generation.xyz import XYZPlan, XYZResult
    from brushwork.generation.xyz_axes import Axis
    from brushwork.jobs.service import JobService

MODEL_AXES = {"checkpoint": ModelKind.CHECKPOINT, "vae": ModelKind.VAE, "lora": ModelKind.LORA}
AXIS_FIELDS = ("x", "y", "z")


@dataclass(frozen=True)
class AxisSpec:
    """One axis as a client gives it: A1111's type name (or ours) and its values text."""

    type: str
    values: str


@dataclass(frozen=True, eq=False)
class GridOutcome:
    """A finished plot: the result, the grid files (main grid first), the images' bytes."""

    result: XYZResult
    saved: tuple[Path, ...]
    pngs: tuple[bytes, ...]

    @property
    def interrupted(self) -> bool:
        return self.result.interrupted


def parse_axes(specs: Sequence[AxisSpec | None]) -> tuple[Axis | None, Axis | None, Axis | None]:
    """Parse X, Y and Z; an error names the axis (``x_values: ...``)."""
    from brushwork.generation.xyz_axes import parse_axis

    axes: list[Axis | None] = []
    for field, spec in zip(AXIS_FIELDS, specs, strict=True):
        if spec is None or not spec.type.strip() or spec.type.strip().lower() == "nothing":
            axes.append(None)
            continue
        try:
            axis = parse_axis(spec.type, spec.values)
        except ConfigError as error:
            raise ConfigError(
                f"{field}_type/{field}_values: {error.message}", hint=error.hint
            ) from None
        axes.append(axis)
    return axes[0], axes[1], axes[2]


def _model_name(key: str, value: str) -> str | None:
    if key == "vae" and value.casefold() in ("auto", "none", "baked"):
        return None
    if key == "lora":
        if value.casefold() in ("none", ""):
            return None
        return value.split(":")[0]
    return value


def check_model_values(service: JobService, axes: Sequence[Axis | None]) -> None:
    """Every model an axis names is a library entry, never a path (see the module docstring)."""
    for field, axis in zip(AXIS_FIELDS, axes, strict=True):
        if axis is None or axis.type.key not in MODEL_AXES:
            continue
        for value in axis.values:
            name = _model_name(axis.type.key, str(value))
            if name is None:
                continue
            refuse_path_like(f"{field}_values", name)
            if Path(str(value)).is_file() or Path(name).is_file():
                raise ConfigError(f"{field}_values: {value!r} is a file path; give a library name")
            service.library().find(name, kind=MODEL_AXES[axis.type.key])


def _plan(
    service: JobService,
    request: GenerationRequest,
    axes: tuple[Axis | None, Axis | None, Axis | None],
    options: dict[str, Any],
) -> XYZPlan:
    """The plot for the calling thread (the plan holds that thread's library handle)."""
    from brushwork.generation.xyz import plan_xyz

    return plan_xyz(
        request,
        x=axes[0],
        y=axes[1],
        z=axes[2],
        checkpoint=options["checkpoint"],
        vae=options["vae"],
        library=service.library(),
        vae_folders=service.vae_folders(),
        margin=options["margin"],
        draw_legend=options["draw_legend"],
    )


def submit_grid(
    service: JobService,
    request: GenerationRequest,
    specs: Sequence[AxisSpec | None],
    *,
    override_settings: dict[str, Any] | None = None,
    margin: int = 0,
    draw_legend: bool = True,
) -> Job:
    """Check an X/Y/Z plot and queue it (QueueFullError when the queue is full)."""
    axes = parse_axes(specs)
    check_model_values(service, axes)
    return _submit(service, request, axes, override_settings or {}, margin, draw_legend)


def submit_epoch_grid(
    service: JobService,
    training_job: str,
    request: GenerationRequest,
    strengths: str,
    *,
    override_settings: dict[str, Any] | None = None,
) -> Job:
    """The epoch x strength grid of a training job's run: rows = its epoch files (then the
    final file), columns = LoRA strengths, one seed throughout (as A1111 users and
    sd-webui-train-tools compare epochs)."""
    from brushwork.generation.xyz_axes import parse_axis
    from brushwork.generation.xyz_epochs import epoch_axis, find_epoch_files

    found = service.queue.get(training_job)
    if found is None or not isinstance(found.detail, TrainingRun):
        raise ConfigError(f"job: no training job {training_job!r} on this server")
    run: TrainingRun = found.detail
    try:
        columns = parse_axis("lora-strength", strengths)
    except ConfigError as error:
        raise ConfigError(f"strengths: {error.message}", hint=error.hint) from None
    rows = epoch_axis(find_epoch_files(run.output_dir, run=run.output_name))
    return _submit(service, request, (columns, rows, None), override_settings or {}, 0, True)


def _submit(
    service: JobService,
    request: GenerationRequest,
    axes: tuple[Axis | None, Axis | None, Axis | None],
    override_settings: dict[str, Any],
    margin: int,
    draw_legend: bool,
) -> Job:
    from brushwork.jobs.options import request_overrides
    from brushwork.samplers import resolve_seed

    settings = service.effective_options(override_settings)
    entry = service.checkpoint_entry(settings["sd_model_checkpoint"])
    request = request.with_changes(
        **request_overrides(settings),
        seed=resolve_seed(request.seed),
        subseed=resolve_seed(request.subseed),
    )
    options = {"checkpoint": entry.path, "vae": service.vae_choice(settings["sd_vae"]),
               "margin": margin, "draw_legend": draw_legend}  # fmt: skip
    plan = _plan(service, request, axes, options)  # checked now: errors reach the client
    columns, rows, depth = plan.shape

    def run(context: JobContext) -> GridOutcome:
        return _draw(context, service, _plan(service, request, axes, options))

    summary = {
        "prompt": request.prompt[:500], "seed": request.seed, "cells": len(plan.cells),
        "shape": [columns, rows, depth],
        "axes": [axis.type.label if axis else None for axis in axes],
    }  # fmt: skip
    return service.enqueue(Job("xyz", run, summary))


def _draw(context: JobContext, service: JobService, plan: XYZPlan) -> GridOutcome:
    from brushwork.generation import GenerationProgress
    from brushwork.generation.xyz import XYZProgress, run_xyz
    from brushwork.generation.xyz_output import draw_xyz, save_xyz

    cells = len(plan.cells)
    done = [0]

    def load(path: Path, vae: Any) -> Any:
        return context.host.model(path, vae, plan.vae_folders)

    def on_cell(event: XYZProgress) -> None:
        done[0] = event.done

    def on_step(event: GenerationProgress) -> None:
        context.report(
            done[0] * event.total + event.done, cells * event.total, phase="xyz",
            iteration=done[0], iterations=cells,
        )  # fmt: skip

    result = run_xyz(plan, load, progress=on_cell, step_progress=on_step, cancel=context.cancel)
    if not any(cell is not None for cell in result.cells):
        return GridOutcome(result, (), ())
    grids = draw_xyz(result)
    saved = save_xyz(result, service.config.outputs_dir, grids)
    return GridOutcome(result, saved, tuple(grid.png_bytes() for grid in grids))

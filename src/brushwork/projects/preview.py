"""A version's preview: every checkpoint at every LoRA weight, with one seed, in one grid.

This is the X/Y/Z plot of `brushwork grid lora-epochs` (`generation.xyz`): rows are the
version's checkpoints in epoch order (the final file last), columns the weights, and every
cell uses the same seed, the way sd-webui-train-tools previews all of a run's checkpoints at
once. Several seeds add a Z axis: one sub-grid per seed, side by side in the main grid.

The grid is saved in the version's `previews/` folder as `preview-NNNN.png` (sub-grids
`preview-NNNN-zK.png`) with the X/Y/Z record (`generation.xyz_output`: every cell's place,
box and infotext) in the PNG and beside it as `preview-NNNN.json`; the version's record lists
it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.generation.engine import ProgressCallback
from brushwork.generation.request import GenerationRequest
from brushwork.generation.xyz import ModelLoader, XYZPlan, XYZProgress, XYZResult, plan_xyz, run_xyz
from brushwork.generation.xyz_axes import parse_axis
from brushwork.generation.xyz_epochs import EpochFile, epoch_axis, find_epoch_files
from brushwork.generation.xyz_output import draw_xyz
from brushwork.library.catalog import Library
from brushwork.loading.vae import VaeSpec
from brushwork.projects.project import Project, Version
from brushwork.projects.records import PreviewInfo, VersionStatus, now

PREVIEW_NAME = re.compile(r"^preview-(?P<number>\d{4,})\.png$")
DEFAULT_WEIGHTS = "0.6,0.8,1.0"


@dataclass(frozen=True)
class PreviewRequest:
    """What to draw: the request (prompt, size, sampler...), the weights (columns; ranges such
    as `0-1 [5]` work) and the seeds (none: one random seed, drawn once; several: a Z axis)."""

    request: GenerationRequest
    weights: str = DEFAULT_WEIGHTS
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class PreviewRun:
    """How the cells are drawn: the base checkpoint, the library the LoRAs are applied from, and
    a loader for the model (`generation.xyz.ModelLoader`)."""

    checkpoint: Path
    library: Library
    load: ModelLoader
    vae: VaeSpec = "auto"
    vae_folders: tuple[Path, ...] = ()
    progress: Callable[[XYZProgress], None] | None = None
    step_progress: ProgressCallback | None = None
    cancel: threading.Event | None = None


def checkpoint_files(project: Project, version: Version) -> tuple[EpochFile, ...]:
    """The version's LoRA files in epoch order, the final file last."""
    folder = version.layout.checkpoints_dir
    if version.record.status is not VersionStatus.DONE and not folder.is_dir():
        raise ConfigError(
            f"{project.name} {version.name} has no checkpoints yet ({version.record.status})",
            hint=f"train it first: brushwork project train {project.name!r} {version.name}",
        )
    return find_epoch_files(folder, run=version.record.output_name)


def plan_preview(
    project: Project, version: Version, preview: PreviewRequest, run: PreviewRun
) -> XYZPlan:
    """The checked grid: every cell's request, before any model is loaded."""
    files = checkpoint_files(project, version)
    weights = parse_axis("lora-strength", preview.weights)
    seeds = (
        parse_axis("seed", ",".join(str(s) for s in preview.seeds))
        if len(preview.seeds) > 1
        else None
    )
    request = preview.request
    if len(preview.seeds) == 1:
        request = request.with_changes(seed=preview.seeds[0])
    return plan_xyz(
        request,
        x=weights,
        y=epoch_axis(files),
        z=seeds,
        checkpoint=run.checkpoint,
        vae=run.vae,
        library=run.library,
        vae_folders=run.vae_folders,
    )


def _next_number(folder: Path) -> int:
    taken = [
        int(m["number"]) for p in folder.glob("preview-*.png") if (m := PREVIEW_NAME.match(p.name))
    ]
    return max(taken, default=0) + 1


def save_preview(
    version: Version, result: XYZResult, preview: PreviewRequest
) -> tuple[Version, PreviewInfo]:
    """Write the grids into the version's previews folder and list them in its record."""
    layout = version.layout
    grids = draw_xyz(result)
    layout.previews_dir.mkdir(parents=True, exist_ok=True)
    stem = f"preview-{_next_number(layout.previews_dir):04d}"
    main = layout.previews_dir / f"{stem}.png"
    atomic_write_bytes(main, grids[0].png_bytes(), overwrite=False)
    record_file = main.with_suffix(".json")
    atomic_write_bytes(record_file, json.dumps(grids[0].record, indent=1).encode("utf-8"))
    subs = []
    for index, grid in enumerate(grids[1:], start=1):
        sub = layout.previews_dir / f"{stem}-z{index}.png"
        atomic_write_bytes(sub, grid.png_bytes())
        subs.append(layout.relative(sub))
    plan = result.plan
    weights_axis, files_axis = plan.axes[0], plan.axes[1]
    assert weights_axis is not None and files_axis is not None
    info = PreviewInfo(
        file=layout.relative(main),
        record=layout.relative(record_file),
        sub_grids=tuple(subs),
        created=now(),
        prompt=preview.request.prompt,
        negative_prompt=preview.request.negative_prompt,
        weights=tuple(float(w) for w in weights_axis.values),
        seeds=tuple(dict.fromkeys(cell.request.seed for cell in plan.cells)),
        checkpoints=tuple(layout.relative(Path(str(p))) for p in files_axis.values),
        cells=sum(cell is not None for cell in result.cells),
    )
    current = version.reload()
    saved = current.save(
        current.record.changed(previews=(*current.record.previews, info.model_dump()))
    )
    return saved, info


def preview_version(
    project: Project, version: Version, preview: PreviewRequest, run: PreviewRun
) -> tuple[Version, PreviewInfo, XYZResult]:
    """Plan, draw and save the preview grid of `version` (see the module docstring)."""
    plan = plan_preview(project, version, preview, run)
    result = run_xyz(
        plan,
        run.load,
        progress=run.progress,
        step_progress=run.step_progress,
        cancel=run.cancel,
    )
    saved, info = save_preview(version, result, preview)
    return saved, info, result


def preview_files(version: Version) -> list[Path]:
    """The preview grids listed in the version's record that still exist, oldest first."""
    return [
        path
        for info in version.record.previews
        if (path := version.layout.absolute(info.file)).is_file()
    ]


def weights_text(weights: Sequence[float]) -> str:
    return ",".join(f"{w:g}" for w in weights)

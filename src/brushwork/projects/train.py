"""Training a version: `training.lora.train_lora` with the version's options, recorded.

The version's record says `training` (with this process's id) while it runs, then `done` with
the timings, the step and epoch counts and the files written (checkpoints in epoch order, the
loss log and curve, the run's config), or `failed` with the error. The run's log lines go to
`logs/train.log` too.

A version trains once: a `done` version is refused unless `force` (its checkpoints, logs and
previews are then removed first), and so is one that another live process is training. A
`failed` or interrupted version trains again from the start; when its checkpoints folder holds
saved states (`save_state = true`), `resume` continues from the newest one, and starting over
needs `force`. A version whose options set `resume` continues from that state (the options ask
for it).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brushwork.core.errors import ConfigError
from brushwork.generation.xyz_epochs import find_epoch_files
from brushwork.projects.project import Project, Version
from brushwork.projects.records import VersionFiles, VersionStatus, now, this_host
from brushwork.projects.versions import read_version_config
from brushwork.training.config import LoraTrainingConfig
from brushwork.training.engine import Hooks
from brushwork.training.lora import LoraRunResult

logger = logging.getLogger(__name__)

STATE_SUFFIX = "-state"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class TrainOptions:
    """How `train_version` runs. `preview_factory` builds sample previews (a callable from the
    caller: the training floor does not draw); `accelerator` is accelerate's, when given."""

    force: bool = False
    resume: bool = False
    hooks: Hooks | None = None
    preview_factory: Callable[[Any], Any] | None = None
    accelerator: Any = None


def state_folders(version: Version) -> list[Path]:
    """The saved training states in the version's checkpoints folder, oldest first."""
    folder = version.layout.checkpoints_dir
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.endswith(STATE_SUFFIX)]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _check_can_train(project: Project, version: Version, options: TrainOptions) -> None:
    record = version.record
    where = f"{project.name} {version.name}"
    if record.running_elsewhere and not options.force:
        raise ConfigError(
            f"{where} is being trained by process {record.pid} on {record.host} "
            f"(since {record.started})",
            hint="wait for it; if that process is not training it, pass --force",
        )
    if record.status is VersionStatus.DONE and not options.force:
        raise ConfigError(
            f"{where} is already trained ({record.finished}); training it again replaces its "
            "checkpoints and previews",
            hint=f"pass --force, or make a new version: brushwork project version "
            f"{project.name!r} --from {version.name} --config FILE.toml",
        )
    states = state_folders(version)
    if states and not options.resume and not options.force:
        raise ConfigError(
            f"{where} stopped before it finished and saved its state in {states[-1].name}",
            hint="pass --resume to continue from it, or --force to start again",
        )
    if options.resume and not states:
        raise ConfigError(
            f"{where} has no saved training state to resume from",
            hint="resuming needs save_state = true in the version's options",
        )


def _clear_outputs(version: Version) -> None:
    """A fresh start: the previous attempt's checkpoints, logs and previews go."""
    for folder in (
        version.layout.checkpoints_dir,
        version.layout.logs_dir,
        version.layout.previews_dir,
    ):
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """The `brushwork` loggers' lines of the run, also in `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    target = logging.getLogger("brushwork")
    previous = target.level
    if target.getEffectiveLevel() > logging.INFO:
        target.setLevel(logging.INFO)
    target.addHandler(handler)
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(previous)
        handler.close()


def _epochs_in_log(csv_path: Path | None) -> int | None:
    if csv_path is None or not csv_path.is_file():
        return None
    lines = csv_path.read_text(encoding="utf-8").strip().splitlines()
    if len(lines) < 2:
        return None
    return int(lines[-1].split(",")[1])


def _finished(version: Version, outcome: LoraRunResult, seconds: float) -> Version:
    layout, result = version.layout, outcome.result
    files = find_epoch_files(layout.checkpoints_dir, run=version.record.output_name)
    recorded = VersionFiles(
        checkpoints=tuple(layout.relative(f.path) for f in files),
        final=layout.relative(result.final_file),
        loss_csv=layout.relative(result.log_csv),
        loss_curve=None if result.loss_curve is None else layout.relative(result.loss_curve),
        run_config=layout.relative(outcome.config_file),
        log=layout.relative(layout.log_file),
    )
    return version.save(
        version.reload().record.changed(
            status=VersionStatus.DONE,
            finished=now(),
            seconds=round(seconds, 2),
            steps=result.steps,
            epochs=_epochs_in_log(result.log_csv),
            error=None,
            pid=None,
            files=recorded.model_dump(),
            warnings=tuple(dict.fromkeys((*version.record.warnings, *outcome.warnings))),
        )
    )


def _config_for_run(version: Version, options: TrainOptions) -> LoraTrainingConfig:
    config = read_version_config(version)
    if options.resume:
        config = config.model_copy(update={"resume": state_folders(version)[-1]})
    return config


def train_version(
    project: Project, version: Version, base_model: Path, options: TrainOptions | None = None
) -> Version:
    """Train `version` on the checkpoint file `base_model` (see the module docstring)."""
    from brushwork.training.lora import train_lora

    options = options or TrainOptions()
    _check_can_train(project, version, options)
    config = _config_for_run(version, options)
    if not options.resume and config.resume is None:
        _clear_outputs(version)
    version = version.save(
        version.record.changed(
            status=VersionStatus.TRAINING, started=now(), finished=None, seconds=None,
            error=None, pid=os.getpid(), host=this_host(), base_model=str(base_model),
            previews=() if not options.resume else version.record.previews,
        )
    )  # fmt: skip
    started = time.perf_counter()
    try:
        with _run_log(version.layout.log_file):
            logger.info("training %s %s on %s", project.name, version.name, base_model)
            outcome = train_lora(
                config,
                base_model,
                accelerator=options.accelerator,
                preview_factory=options.preview_factory,
                hooks=options.hooks,
                warnings=version.record.warnings,
            )
    except BaseException as error:
        message = str(error) or type(error).__name__
        version.save(
            version.reload().record.changed(
                status=VersionStatus.FAILED, finished=now(), pid=None, error=message,
                seconds=round(time.perf_counter() - started, 2),
            )
        )  # fmt: skip
        raise
    return _finished(version, outcome, time.perf_counter() - started)

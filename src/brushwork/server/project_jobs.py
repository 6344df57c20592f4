"""A project version's training and preview grid as jobs of the server's queue.

Both run on a worker like any job: training first frees the worker's cached models (it needs
the device's memory), reports step, total, loss, average loss, epoch and ETA, and stops after
the current step when the job is cancelled (the version is then recorded as failed, "stopped";
its saved checkpoints stay). A preview loads the base model through the worker's model cache
and reports the cells drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.jobs import Job, JobContext, JobService, refuse_path_like
from brushwork.projects.project import Project, Version
from brushwork.projects.records import VersionStatus

if TYPE_CHECKING:
    from brushwork.projects.preview import PreviewRequest
    from brushwork.training.logs import TrainingProgress


class TrainingStoppedError(BrushworkError):
    """The training job was cancelled; the run stopped after its current step."""


def base_model(service: JobService, version: Version, name: str) -> Path:
    """The version's base model: the file it names (as the CLI wrote it), else a library name."""
    if version.record.base_model and Path(version.record.base_model).is_file():
        return Path(version.record.base_model)
    path = Path(name)
    if path.is_absolute() and path.is_file():
        return path
    refuse_path_like("pretrained_model_name_or_path", name)
    return service.library().find(name, kind=ModelKind.CHECKPOINT).path


def submit_training(
    service: JobService, project: Project, version: Version, *, force: bool, resume: bool
) -> Job:
    """Queue the training of `version` (refused at once when it cannot start)."""
    from brushwork.projects.versions import read_version_config

    record = version.record
    if record.status is VersionStatus.DONE and not force:
        raise ConfigError(
            f"{project.name} {version.name} is already trained; pass force to train it again"
        )
    if record.running_elsewhere:
        raise ConfigError(f"{project.name} {version.name} is being trained already")
    config = read_version_config(version)
    base = base_model(service, version, config.pretrained_model_name_or_path)

    def run(context: JobContext) -> Any:
        from brushwork.projects.train import TrainOptions, train_version

        context.host.release()
        options = TrainOptions(force=force, resume=resume, hooks=_hooks(context))
        try:
            done = train_version(project, version, base, options)
        except TrainingStoppedError:
            return {"stopped": True}
        return done.record.model_dump(mode="json")

    summary = {"project": project.name, "version": version.name, "base": base.name}
    return service.submit("train-project", run, summary)


def _hooks(context: JobContext) -> Any:
    from brushwork.training.engine import Hooks

    def on_progress(event: TrainingProgress) -> None:
        context.report(
            event.step, event.total_steps, phase="training", loss=event.loss,
            average_loss=event.average_loss, epoch=event.epoch, epochs=event.total_epochs,
            eta_s=event.eta_seconds,
        )  # fmt: skip

    def after_step(_step: int) -> None:
        if context.cancel.is_set():
            raise TrainingStoppedError("stopped by the user")

    return Hooks(on_progress=on_progress, after_step=after_step)


def submit_preview(
    service: JobService, project: Project, version: Version, preview: PreviewRequest
) -> Job:
    """Queue the preview grid of `version` (checked before it is queued)."""
    from brushwork.projects.preview import PreviewRun, plan_preview, preview_version
    from brushwork.projects.versions import read_version_config

    config = read_version_config(version)
    checkpoint = base_model(service, version, config.pretrained_model_name_or_path)
    library = service.library()
    plan_preview(project, version, preview, PreviewRun(checkpoint, library, _no_loading))

    def run(context: JobContext) -> Any:
        job_library = service.library()
        vae_folders = tuple(
            sorted({e.path.parent for e in job_library.scan().entries if e.kind is ModelKind.VAE})
        )
        run_settings = PreviewRun(
            checkpoint=checkpoint,
            library=job_library,
            load=lambda path, vae: context.host.model(path, vae, vae_folders),
            vae_folders=vae_folders,
            progress=lambda event: context.report(event.done, event.total, phase="cells"),
            cancel=context.cancel,
        )
        _saved, info, _result = preview_version(project, version, preview, run_settings)
        return info.model_dump(mode="json")

    summary = {"project": project.name, "version": version.name, "prompt": preview.request.prompt}
    return service.submit("project-preview", run, summary)


def _no_loading(path: Path, vae: Any) -> Any:
    raise ConfigError("a preview plan loads no model")

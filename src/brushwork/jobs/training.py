"""Training as a job: a LoRA run goes through the same queue as generation (one job at a time
on a device) and into the same job record.

A request is a flat dict of sd-scripts option names, as `brushwork train lora --config` reads
them (`training.config_file`), plus ``sample_prompts_text`` (the lines of a kohya prompts file,
written beside the outputs). A server never takes a place on its disk from a client:

* ``pretrained_model_name_or_path`` and ``vae`` are library names (empty: the current model);
* ``train_data_dir``, ``reg_data_dir``, ``dataset_config``, ``sample_prompts`` are relative to
  the datasets folder (`TrainingPlaces.datasets`);
* ``output_dir`` (default: ``output_name``), ``resume``, ``logging_dir`` are relative to the
  training output folder (`TrainingPlaces.outputs`: by default the first library root's LoRA
  folder, so a trained LoRA and its per-epoch files can be used at once).

An absolute path is accepted only inside its folder; ``..``, ``~`` and drive letters are refused
(422, naming the option). A running job reports step, total, loss, average loss, epoch and the
engine's ETA; its `TrainingRun` keeps the loss history, the plan and the files written.
Interrupting stops it after the current step and keeps the files saved so far.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.core.kinds import ModelKind
from brushwork.jobs.names import checkpoint_title, refuse_path_like
from brushwork.jobs.queue import Job, JobContext, device_matches

if TYPE_CHECKING:
    from brushwork.jobs.service import JobService
    from brushwork.loading import LoadedModel
    from brushwork.training.config import LoraTrainingConfig
    from brushwork.training.logs import TrainingProgress
    from brushwork.training.samples import Preview

logger = logging.getLogger(__name__)

DATASET_OPTIONS = ("train_data_dir", "reg_data_dir", "dataset_config", "sample_prompts")
OUTPUT_OPTIONS = ("output_dir", "resume", "logging_dir")
PROMPTS_TEXT = "sample_prompts_text"
LOSS_HISTORY_LIMIT = 100_000


@dataclass(frozen=True)
class TrainingPlaces:
    """Where a server's training runs may read datasets and write their outputs."""

    datasets: Path
    outputs: Path


def place_path(option: str, value: object, base: Path) -> Path:
    """``value`` (relative to ``base``, or absolute inside it) as a path under ``base``."""
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ConfigError(f"{option}: give a folder or file name relative to {base}")
    text = str(value).strip()
    windows = PureWindowsPath(text)
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if "\x00" in text or ".." in parts or text.startswith("~") or windows.drive:
        raise ConfigError(
            f"{option}: {text!r} leaves the folder it must stay in ({base})",
            hint="give a path relative to that folder, without '..'",
        )
    path = Path(text)
    if path.is_absolute():
        if not path.is_relative_to(base):
            raise ConfigError(f"{option}: {text!r} is not inside {base}")
        return path
    return base / path


def place_options(values: Mapping[str, Any], places: TrainingPlaces) -> dict[str, Any]:
    """The options with every path option placed under its folder (see the module docstring)."""
    placed = dict(values)
    for option in DATASET_OPTIONS:
        if placed.get(option) not in (None, ""):
            placed[option] = str(place_path(option, placed[option], places.datasets))
    name = placed.get("output_name") or "last"
    if not isinstance(name, str) or any(c in name for c in "/\\\x00") or name in (".", ".."):
        raise ConfigError(f"output_name: {name!r} must be a file name without folders")
    placed["output_dir"] = str(place_path("output_dir", placed.get("output_dir") or name,
                                          places.outputs))  # fmt: skip
    for option in OUTPUT_OPTIONS[1:]:
        if placed.get(option) not in (None, ""):
            placed[option] = str(place_path(option, placed[option], places.outputs))
    return placed


@dataclass
class TrainingRun:
    """What a training job shows while it runs and after: plan, losses, files (thread-safe)."""

    output_dir: Path
    output_name: str
    file_suffix: str
    config_text: str
    plan_text: str = ""
    warnings: tuple[str, ...] = ()
    losses: list[dict[str, float | int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_loss(self, event: TrainingProgress) -> None:
        row = {
            "step": event.step,
            "epoch": event.epoch,
            "loss": event.loss,
            "average_loss": event.average_loss,
        }
        with self._lock:
            if len(self.losses) < LOSS_HISTORY_LIMIT:
                self.losses.append(row)

    def losses_since(self, step: int) -> list[dict[str, float | int]]:
        with self._lock:
            return [row for row in self.losses if int(row["step"]) > step]

    def saved_files(self) -> list[Path]:
        """The network files the run has written so far (per-epoch/step ones, then the last)."""
        if not self.output_dir.is_dir():
            return []
        found = [
            path
            for path in self.output_dir.iterdir()
            if path.name.startswith(self.output_name) and path.name.endswith(self.file_suffix)
        ]
        return sorted(found, key=lambda p: (p.stem == self.output_name, p.name))

    def samples(self) -> list[dict[str, str]]:
        """Preview images: ``{label, file}``, label ``e000001`` (epoch), ``000050`` (step)."""
        folder = self.output_dir / "sample"
        if not folder.is_dir():
            return []
        items = []
        for path in sorted(folder.glob("*.png")):
            rest = path.name.split("_")
            label = rest[-4] if len(rest) >= 5 else ""
            items.append({"label": label, "file": path.name})
        return items


@dataclass(frozen=True, eq=False)
class TrainingOutcome:
    """A finished (or interrupted) training job."""

    run: TrainingRun
    interrupted: bool
    saved: tuple[Path, ...]
    final_file: Path | None
    steps: int


class _InterruptedError(Exception):
    """Internal: the job's cancel flag was set between two steps."""


def resolve_training(
    values: Mapping[str, Any], places: TrainingPlaces
) -> tuple[LoraTrainingConfig, tuple[str, ...], str | None]:
    """The validated config, its warnings, and the sample prompt lines to write (if given).
    ``pretrained_model_name_or_path`` must already be set (the caller resolves the name)."""
    from brushwork.training.config_file import resolve_config, sort_options

    raw = dict(values)
    prompts = raw.pop(PROMPTS_TEXT, None)
    if prompts is not None and not isinstance(prompts, str):
        raise ConfigError(f"{PROMPTS_TEXT}: give the prompt lines as one string")
    if prompts is not None and not prompts.strip():
        prompts = None
    if prompts is not None:
        raw.pop("sample_prompts", None)
    placed = place_options(raw, places)
    if prompts is not None:  # written beside the outputs when the job starts
        placed["sample_prompts"] = str(Path(placed["output_dir"]) / "sample-prompts.txt")
    config, warnings = resolve_config(sort_options(placed, origin="request"))
    if prompts is not None:
        from brushwork.training.samples import parse_prompt_text

        parsed = parse_prompt_text(prompts, sampler=config.sample_sampler, source=PROMPTS_TEXT)
        if not parsed.requests:
            raise ConfigError(f"{PROMPTS_TEXT}: no prompt in it (one prompt per line)")
        warnings += tuple(parsed.warnings)
    return config, warnings, prompts


def step_plan_text(config: LoraTrainingConfig) -> tuple[str, dict[str, int]]:
    """kohya's step arithmetic for this config, without loading a model (one process)."""
    from brushwork.training.data.dataset import TrainingDataset
    from brushwork.training.data.plan import format_step_plan, step_plan
    from brushwork.training.lora_setup import dataset_spec
    from brushwork.training.text import check_token_length

    dataset = TrainingDataset(
        dataset_spec(config),
        seed=config.seed or 0,
        tokenizer_max_length=check_token_length(config.max_token_length),
    )
    plan = step_plan(
        dataset,
        max_train_epochs=config.max_train_epochs,
        max_train_steps=config.max_train_steps,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    numbers = {
        "num_train_images": plan.num_train_images,
        "num_reg_images": plan.num_reg_images,
        "batches_per_epoch": plan.batches_per_epoch,
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "total_steps": plan.total_steps,
    }
    return format_step_plan(plan), numbers


def preview_factory(model: LoadedModel) -> Preview:
    """Sample images during training, drawn by `brushwork.generation` with the trained model."""
    from brushwork.generation import Generator
    from brushwork.generation.previews import preview_images

    generator = Generator(model)

    def preview(request: Any) -> list[Any]:
        return preview_images(generator, request)

    return preview


def run_lora_training(
    context: JobContext,
    config: LoraTrainingConfig,
    base_model: Path,
    run: TrainingRun,
    prompts: str | None,
) -> TrainingOutcome:
    """The job: free the worker's models, train on its device, report every step."""
    from brushwork.training.engine import Hooks
    from brushwork.training.lora import train_lora

    if prompts is not None and config.sample_prompts is not None:
        atomic_write_bytes(Path(config.sample_prompts), prompts.encode("utf-8"))
    context.host.release()

    def on_progress(event: TrainingProgress) -> None:
        run.add_loss(event)
        context.report(
            event.step, event.total_steps, phase="training", loss=event.loss,
            average_loss=event.average_loss, epoch=event.epoch, epochs=event.total_epochs,
            eta_s=event.eta_seconds,
        )  # fmt: skip

    def after_step(_step: int) -> None:
        if context.cancel.is_set():
            raise _InterruptedError()

    hooks = Hooks(on_progress=on_progress, after_step=after_step)
    factory = preview_factory if config.sample_prompts is not None else None
    try:
        with _on_device(context.host.device):
            outcome = train_lora(config, base_model, preview_factory=factory, hooks=hooks)
    except _InterruptedError:
        logger.info(
            "training %s interrupted at step %d", run.output_name, context.job.progress.step
        )
        saved = tuple(run.saved_files())
        return TrainingOutcome(run, True, saved, None, context.job.progress.step)
    run.plan_text = outcome.plan_text
    run.warnings = run.warnings + outcome.warnings
    result = outcome.result
    return TrainingOutcome(run, False, result.saved_files, result.final_file, result.steps)


@contextlib.contextmanager
def _on_device(device: str) -> Iterator[None]:
    """Make a worker's CUDA device the current one (accelerate trains on the current device)."""
    if not device.startswith("cuda"):
        yield
        return
    import torch

    previous = torch.cuda.current_device()
    torch.cuda.set_device(torch.device(device))
    try:
        yield
    finally:
        torch.cuda.empty_cache()
        torch.cuda.set_device(previous)


# -- the service's training calls ------------------------------------------------------------


def training_places(service: JobService) -> TrainingPlaces:
    """The datasets folder, and where runs write: ``training_outputs``, else the first root's
    LoRA folder, else ``<data dir>/training``."""
    outputs = service.config.training_outputs
    if outputs is None:
        from brushwork.library.layout import model_folders

        folders = [
            folder.path
            for root in service.library().roots
            for folder in model_folders(root)
            if folder.kind is ModelKind.LORA
        ]
        outputs = folders[0] if folders else service.settings.data_dir / "training"
    return TrainingPlaces(service.config.datasets_dir.absolute(), outputs.absolute())


def _training_config(
    service: JobService, values: Mapping[str, Any]
) -> tuple[LoraTrainingConfig, Path, tuple[str, ...], str | None]:
    """The request resolved: base model and VAE looked up in the library, paths placed."""
    name = values.get("pretrained_model_name_or_path") or service.options.get("sd_model_checkpoint")
    if name is not None and not isinstance(name, str):
        raise ConfigError("pretrained_model_name_or_path: give a checkpoint name")
    if name:
        refuse_path_like("pretrained_model_name_or_path", name)
    entry = service.checkpoint_entry(name)
    vae = values.get("vae")
    if vae:
        if not isinstance(vae, str):
            raise ConfigError("vae: give a VAE name from the library")
        refuse_path_like("vae", vae)
        vae = str(service.library().find(vae, kind=ModelKind.VAE).path)
    given = {**values, "pretrained_model_name_or_path": checkpoint_title(entry), "vae": vae}
    config, warnings, prompts = resolve_training(given, training_places(service))
    return config, entry.path, warnings, prompts


def plan_training(service: JobService, values: Mapping[str, Any]) -> dict[str, Any]:
    """A request checked, with kohya's step arithmetic; nothing queued."""
    from brushwork.training.config_file import config_toml

    config, _base, warnings, _prompts = _training_config(service, values)
    text, numbers = step_plan_text(config)
    return {
        "plan": text,
        **numbers,
        "output_dir": str(config.output_dir),
        "config": config_toml(config),
        "warnings": list(warnings),
    }


def submit_training(service: JobService, values: Mapping[str, Any]) -> Job:
    """Queue a LoRA run on the training device (CUDA when there is one, else the CPU)."""
    import torch

    from brushwork.training.config import check_environment
    from brushwork.training.config_file import config_toml

    config, base, warnings, prompts = _training_config(service, values)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # the prompts file of sample_prompts_text is written when the job starts
    check_environment(
        config if prompts is None else config.model_copy(update={"sample_prompts": None}),
        device,
    )
    if not any(device_matches(device, worker.host.device) for worker in service.workers):
        raise ConfigError(
            f"training runs on {device} (accelerate's device) but no worker of this server "
            f"uses it ({', '.join(w.host.device for w in service.workers)})",
            hint=f"start serve with --devices {device},...",
        )
    text, numbers = step_plan_text(config)
    run = TrainingRun(config.output_dir, config.output_name, config.file_suffix,
                      config_toml(config), text, warnings)  # fmt: skip

    def job_run(context: JobContext) -> TrainingOutcome:
        return run_lora_training(context, config, base, run, prompts)

    summary = {
        "output_name": config.output_name, "output_dir": str(config.output_dir),
        "base": config.pretrained_model_name_or_path, **numbers,
    }  # fmt: skip
    return service.enqueue(Job("train-lora", job_run, summary, device=device, detail=run))

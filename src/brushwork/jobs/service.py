"""The job service: the only long-lived state of a server (floor F5).

It owns the job record (`JobStore`), the bounded queue, one worker per device (each with its own
model cache), the options, and a library handle per thread (SQLite connections are per thread).
The HTTP layer turns requests into calls here and never keeps state of its own.

    service = JobService(ServiceConfig(settings, roots=(root,), devices=("cpu",)))
    service.start()
    job = service.submit_generation(request)      # QueueFullError when the queue is full
    outcome = job.future.result()                 # GenerationOutcome: images written first
    service.close()
"""

from __future__ import annotations

import base64
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.jobs.names import checkpoint_title, refuse_path_like
from brushwork.jobs.options import EFFECTIVE, Options, check_option, request_overrides
from brushwork.jobs.previews import LivePreview, PreviewSettings
from brushwork.jobs.queue import Job, JobContext, JobFunction, JobQueue
from brushwork.jobs.store import JobStore
from brushwork.jobs.training import (
    TrainingPlaces,
    plan_training,
    submit_training,
    training_places,
)
from brushwork.jobs.workers import DEFAULT_CACHE_BYTES, ModelHost, Worker

if TYPE_CHECKING:
    from brushwork.generation import GenerationRequest, GenerationResult
    from brushwork.library.catalog import Library
    from brushwork.library.entry import ModelEntry

logger = logging.getLogger(__name__)

JOBS_DB = "jobs.sqlite3"


@dataclass(frozen=True)
class ServiceConfig:
    """How to run the job service."""

    settings: Settings = field(default_factory=Settings)
    roots: tuple[Path, ...] = ()
    devices: tuple[str, ...] = ()  # empty: settings.device
    queue_size: int = 64
    outputs: Path | None = None  # default <data_dir>/outputs
    owner: str = "local"  # names this server's rows in the shared job record
    cache_bytes: int = DEFAULT_CACHE_BYTES
    datasets: Path | None = None  # training datasets; default <data_dir>/datasets
    training_outputs: Path | None = None  # default: the first root's LoRA folder

    @property
    def outputs_dir(self) -> Path:
        return self.outputs or self.settings.data_dir / "outputs"

    @property
    def datasets_dir(self) -> Path:
        return self.datasets or self.settings.data_dir / "datasets"


@dataclass(frozen=True, eq=False)
class GenerationOutcome:
    """A finished generation job: the result, the files written, the model used."""

    result: GenerationResult
    saved: tuple[Path, ...]
    checkpoint_title: str

    @property
    def interrupted(self) -> bool:
        return self.result.interrupted


class JobService:
    """Queue, workers, job record, options and library (see the module docstring)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.settings = config.settings
        self.store = JobStore(self.settings.data_dir / JOBS_DB, config.owner)
        self.queue = JobQueue(config.queue_size)
        self.options = Options()
        devices = config.devices or (self.settings.device,)
        self.workers = [
            Worker(
                f"worker-{index}-{device}",
                ModelHost(device, self.settings.precision, config.cache_bytes),
                self.queue,
                self.store,
            )
            for index, device in enumerate(devices)
        ]
        self._local = threading.local()
        self._libraries: list[Library] = []
        self._libraries_lock = threading.Lock()
        self.lost_jobs = 0

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.lost_jobs = self.store.mark_lost()
        if self.lost_jobs:
            logger.warning("%d jobs of an earlier run were lost", self.lost_jobs)
        for worker in self.workers:
            worker.start()

    def close(self, timeout: float = 10.0) -> None:
        self.queue.interrupt_running()
        for job in self.queue.close():
            self.store.update(job.id, state="cancelled", finished=time.time(), error=job.error)
        for worker in self.workers:
            worker.join(timeout)
        with self._libraries_lock:
            for library in self._libraries:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    library.close()  # only the opening thread may; the others close when freed
            self._libraries.clear()
        self.store.close()

    def library(self) -> Library:
        """This thread's library handle (opened on first use)."""
        library: Library | None = getattr(self._local, "library", None)
        if library is None:
            from brushwork.library.catalog import Library

            library = Library.open(self.settings, self.config.roots)
            self._local.library = library
            with self._libraries_lock:
                self._libraries.append(library)
        return library

    # -- jobs -----------------------------------------------------------------------------------

    def submit(self, kind: str, run: JobFunction, summary: Mapping[str, Any]) -> Job:
        """Queue a job (QueueFullError when full) and record it."""
        return self.enqueue(Job(kind, run, dict(summary)))

    def enqueue(self, job: Job) -> Job:
        """Record the job, then queue it (a worker may start it at once); a refused job
        leaves no row."""
        self.store.add(job.id, job.kind, job.summary, job.created)
        try:
            self.queue.submit(job)
        except BaseException:
            self.store.delete(job.id)
            raise
        return job

    def submit_generation(
        self,
        request: GenerationRequest,
        *,
        override_settings: Mapping[str, Any] | None = None,
        save: bool = True,
    ) -> Job:
        """Queue a txt2img/img2img job with the current options (and per-request overrides)."""
        options = self.effective_options(override_settings or {})
        entry = self.checkpoint_entry(options["sd_model_checkpoint"])
        vae = self.vae_choice(options["sd_vae"])
        request = request.with_changes(**request_overrides(options))
        title = checkpoint_title(entry)
        folder = self.config.outputs_dir if save else None
        previews = PreviewSettings.from_options(options)

        def run(context: JobContext) -> GenerationOutcome:
            return _generate(
                context, self.library(), request, (entry.path, vae), folder, title, previews
            )

        summary = _summary(request, title)
        return self.submit(request.mode, run, summary)

    def training_places(self) -> TrainingPlaces:
        """Where training reads datasets and writes (see `jobs.training`)."""
        return training_places(self)

    def plan_training(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A training request checked and its step arithmetic computed, nothing queued."""
        return plan_training(self, values)

    def submit_training(self, values: Mapping[str, Any]) -> Job:
        """Queue a LoRA run (sd-scripts options; see `jobs.training`) on the training device."""
        return submit_training(self, values)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job (recorded) or stop a running one at its next step."""
        job = self.queue.cancel(job_id)
        if job is not None and job.state == "cancelled":
            self.store.update(job_id, state="cancelled", finished=time.time())
        return job

    def effective_options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The options with a request's ``override_settings`` applied (checked)."""
        options = self.options.snapshot()
        for key, value in overrides.items():
            if key in EFFECTIVE:
                options[key] = check_option(key, value)
        return options

    # -- models ---------------------------------------------------------------------------------

    def checkpoints(self) -> list[ModelEntry]:
        """Every checkpoint, the user's first and brushwork's built-in demo model last (so it
        is the default only when the user has none)."""
        library = self.library()
        found = [e for e in library.scan().entries if e.kind is ModelKind.CHECKPOINT]
        return sorted(found, key=lambda e: (library.is_builtin(e), e.relative_path.casefold()))

    def entries(self, kind: ModelKind) -> list[ModelEntry]:
        scan = self.library().scan()
        found = [e for e in scan.entries if e.kind is kind]
        return sorted(found, key=lambda e: e.relative_path.casefold())

    def checkpoint_entry(self, name: str | None) -> ModelEntry:
        """The checkpoint an option names (a library name, title or hash), else the first one."""
        if name:
            refuse_path_like("sd_model_checkpoint", name)
            return self.library().find(name, kind=ModelKind.CHECKPOINT)
        found = self.checkpoints()
        if not found:
            roots = ", ".join(str(r) for r in self.library().roots)
            raise ConfigError(
                f"no checkpoint in the library ({roots})",
                hint="put a .safetensors checkpoint in models/Stable-diffusion under a root",
            )
        return found[0]

    def current_checkpoint(self) -> ModelEntry | None:
        """The checkpoint jobs use now, hashed (its title carries the hash)."""
        try:
            entry = self.checkpoint_entry(self.options.get("sd_model_checkpoint"))
        except ConfigError:
            return None
        return self.library().hash_entry(entry)

    def vae_choice(self, name: str) -> str | Path:
        """``auto``, ``none``, or the path of the library VAE an option names."""
        lowered = name.lower()
        if lowered in ("automatic", "auto", ""):
            return "auto"
        if lowered in ("none", "baked"):
            return "none"
        refuse_path_like("sd_vae", name)
        return self.library().find(name, kind=ModelKind.VAE).path

    def vae_folders(self) -> tuple[Path, ...]:
        return tuple(sorted({e.path.parent for e in self.entries(ModelKind.VAE)}))

    def set_options(self, values: Mapping[str, Any]) -> Job | None:
        """Check and store options; a new checkpoint is loaded by a queued job (returned)."""
        checked = {key: check_option(key, value) for key, value in values.items()}
        load: Job | None = None
        name = checked.get("sd_model_checkpoint")
        if name is not None:
            entry = self.library().hash_entry(self.checkpoint_entry(name))
            checked["sd_model_checkpoint"] = checkpoint_title(entry)
            checked["sd_checkpoint_hash"] = entry.sha256
        if "sd_vae" in checked:
            self.vae_choice(checked["sd_vae"])
        if name is not None:
            vae = self.vae_choice(checked.get("sd_vae", self.options.get("sd_vae")))
            path = entry.path

            def run(context: JobContext) -> None:
                context.host.model(path, vae, self.vae_folders())

            load = self.submit("load", run, {"checkpoint": checked["sd_model_checkpoint"]})
        self.options.update(checked)
        return load

    # -- views ----------------------------------------------------------------------------------

    def progress(self, *, current_image: bool = False) -> dict[str, Any]:
        """A1111's ``/sdapi/v1/progress`` body (the oldest running job, if any); with
        ``current_image`` its live preview as base64 PNG (A1111's ``skip_current_image=false``)."""
        running = self.queue.running()
        waiting = self.queue.waiting()
        job = min(running, key=lambda j: j.created) if running else None
        state = {
            "skipped": bool(job and job.skip.is_set()),
            "interrupted": bool(job and job.cancel.is_set()),
            "stopping_generation": False,
            "job": job.id if job else "",
            "job_count": len(running) + len(waiting),
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created))
            if job
            else "0",
            "job_no": job.progress.iteration if job else 0,
            "sampling_step": job.progress.step if job else 0,
            "sampling_steps": job.progress.total if job else 0,
        }
        png = job.preview.png() if current_image and job and job.preview is not None else None
        return {
            "progress": job.progress.fraction if job else 0.0,
            "eta_relative": job.progress.eta_s if job else 0.0,
            "state": state,
            "current_image": base64.b64encode(png).decode("ascii") if png else None,
            "textinfo": _textinfo(job),
        }


def _textinfo(job: Job | None) -> str | None:
    """A line for a progress bar (A1111 shows the sampling step, here with the batch)."""
    if job is None:
        return None
    progress = job.progress
    if job.kind == "train-lora":
        loss = progress.metrics.get("average_loss")
        tail = f", loss {loss:.4f}" if isinstance(loss, float) else ""
        return f"training step {progress.step}/{progress.total}{tail}"
    if not progress.total:
        return "waiting for the model"
    if job.kind == "xyz":
        return f"cell {progress.iteration + 1}/{progress.iterations}"
    batch = (
        f"batch {progress.iteration + 1}/{progress.iterations}, " if progress.iterations > 1 else ""
    )
    return f"{batch}step {progress.step}/{progress.total}"


def _summary(request: GenerationRequest, title: str) -> dict[str, Any]:
    return {
        "prompt": request.prompt[:500],
        "negative_prompt": request.negative_prompt[:500],
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "sampler_name": request.sampler_name,
        "seed": request.seed,
        "images": request.image_count,
        "checkpoint": title,
    }


def _generate(
    context: JobContext,
    library: Library,
    request: GenerationRequest,
    model_choice: tuple[Path, str | Path],
    folder: Path | None,
    title: str,
    previews: PreviewSettings,
) -> GenerationOutcome:
    """Run one generation job on the worker's model host, saving each image when finished."""
    from brushwork.generation import GenerationProgress, images_folder, save_image

    checkpoint, vae = model_choice
    vae_folders = tuple(
        sorted({e.path.parent for e in library.scan().entries if e.kind is ModelKind.VAE})
    )
    model = context.host.model(checkpoint, vae, vae_folders)
    generator = context.host.generator(model, library)
    live = LivePreview(previews, model.family, full=lambda latents: _decode_full(model, latents))
    context.job.preview = live
    saved: list[Path] = []
    out = images_folder(folder, request.mode) if folder is not None else None

    def keep(item: Any) -> None:
        if out is not None:
            saved.append(save_image(item.image, out, seed=item.seed, infotext=item.infotext))

    def advance(event: GenerationProgress) -> None:
        context.report(
            event.done, event.total, phase=event.phase, iteration=event.iteration,
            iterations=event.iterations,
        )  # fmt: skip

    def preview(event: GenerationProgress, denoised: Any) -> None:
        live.offer(event.step, event.steps, denoised)

    result = generator.generate(
        request, progress=advance, cancel=context.cancel, on_image=keep, preview=preview,
        skip=context.skip,
    )  # fmt: skip
    return GenerationOutcome(result, tuple(saved), title)


def _decode_full(model: Any, latents: Any) -> list[Any]:
    """A1111's "Full" live preview: the VAE decodes the prediction (in the sampling thread)."""
    from brushwork.generation.imaging import sample_to_image
    from brushwork.loading import decode_latents

    decoded = decode_latents(model, latents)
    return [sample_to_image(image) for image in decoded]
